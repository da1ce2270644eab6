"""Browser: selecting several runs compares them: scalar panels overlay, per-layer panels sit
side by side, the header has a card per run, and the URL names every run."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser


def _runs_in(dash_duo, panel, key):
    fig = browser.graph(dash_duo, panel) or {"data": []}
    return {(t["meta"]["live"]["run"], t.get("xaxis")) for t in fig["data"]
            if (t.get("meta") or {}).get("live", {}).get("key") == key}


def _heatmap_axes(dash_duo, panel):
    fig = browser.graph(dash_duo, panel) or {"data": []}
    return [t for t in fig["data"] if t["type"] == "heatmap"]


def test_compare001_select_several_runs(dash_duo, tmp_path):
    for name, steps in (("alpha", 30), ("beta", 45), ("gamma", 20)):
        stores.write_run(str(tmp_path / name), steps=steps)
    dash_duo.start_server(create_app(str(tmp_path)))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=alpha")
    until(lambda: _runs_in(dash_duo, "scalars", "loss") == {("alpha", "x")}, timeout=30)

    browser.tick_run(dash_duo, "beta")
    until(lambda: _runs_in(dash_duo, "scalars", "loss") == {("alpha", "x"), ("beta", "x")},
          timeout=30, msg="the loss of both runs is not overlaid in one plot")
    until(lambda: len(_heatmap_axes(dash_duo, "grad_norm")) == 2, timeout=30)
    heats = _heatmap_axes(dash_duo, "grad_norm")
    assert heats[0]["xaxis"] != heats[1]["xaxis"], "per-layer heatmaps must be side by side"
    until(lambda: "run=alpha&run=beta" in dash_duo.driver.current_url, timeout=10)
    header = browser.text(dash_duo, browser.element_id("panel-extra", "header"))
    assert "alpha" in header and "beta" in header and "steps 0..44" in header
    # the slider spans the union of the runs' steps
    slider = dash_duo.find_element("#step-slider [role=slider]")
    assert slider.get_attribute("aria-valuemax") == "44"

    # three runs straight from a shared URL
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=alpha&run=beta&run=gamma&step=12")
    until(lambda: {r for r, _ in _runs_in(dash_duo, "update_ratio", "update_ratio")}
          == {"alpha", "beta", "gamma"}, timeout=30)
    axes = {r: a for r, a in _runs_in(dash_duo, "update_ratio", "update_ratio")}
    assert len(set(axes.values())) == 3
    until(lambda: set(browser.cursor_steps(dash_duo, "scalars")) == {12}, timeout=20)
    assert dash_duo.get_logs() == [], "browser console should contain no error"
