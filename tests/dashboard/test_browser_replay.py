"""Browser: one step slider (keyboard and play) moves every panel; an event row jumps to its
step and highlights its layer; the URL follows."""

from __future__ import annotations

import pytest
from dash.testing.wait import until
from selenium.webdriver.common.keys import Keys

from dashboard import create_app
from dashboard.panels import COCKPIT, PANELS, recorded
from instrument.store import schema
from instrument.store.reader import load
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser
GRAPH_PANELS = [p.NAME for p in PANELS if getattr(p, "GRAPH", True)]


def panels_with_data(run_dir) -> tuple:
    """Graph panels with series in this run (they must follow the slider) and those without
    (they must say why, with their placeholder, and are hidden)."""
    run = load(run_dir)
    keys = {kind: run.keys(kind) for kind in (schema.SCALAR, schema.LAYER)}
    have = [p.NAME for p in PANELS if getattr(p, "GRAPH", True)
            and (getattr(p, "ALWAYS_SHOWN", False) or recorded(p, keys))]
    return have, [n for n in GRAPH_PANELS if n not in have]


STEPS = 60


def slider_value(dash_duo) -> int:
    """Where the step slider's handle is."""
    return int(dash_duo.find_element("#step-slider [role=slider]").get_attribute(
        "aria-valuenow"))


def _followed(dash_duo, step: int, panels=GRAPH_PANELS) -> bool:
    """Every graph panel's cursors sit at ``step`` and every bar shows the last recorded
    step at or before it; the header says which step is shown."""
    for name in panels:
        cursors = browser.cursor_steps(dash_duo, name)
        if not cursors or any(c != step for c in cursors):
            return False
    act_step = step - step % stores.ACT_EVERY  # activations are recorded every 5 steps
    if set(browser.bar_steps(dash_duo, "grad_norm")) != {step}:
        return False
    if set(browser.bar_steps(dash_duo, "update_ratio")) != {step}:
        return False
    if set(browser.bar_steps(dash_duo, "activations")) != {act_step}:
        return False
    header = browser.text(dash_duo, browser.element_id("panel-extra", "header"))
    return f"viewing step {step}" in header


def test_replay001_slider_play_and_event_rows(dash_duo, tmp_path):
    stores.write_run(str(tmp_path / "r"), steps=STEPS,
                     events=[stores.nonfinite_event(33, "2")])
    drawn, empty = panels_with_data(str(tmp_path / "r"))
    # a single-process run has no per-rank series, this run no Cockpit series, and every
    # layer series it has is drawn by its own panel
    assert empty == ["layers", "ranks"] + [p.NAME for p in COCKPIT if getattr(p, "GRAPH", True)]
    dash_duo.start_server(create_app(str(tmp_path)))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=r&step=10")
    until(lambda: _followed(dash_duo, 10, drawn), timeout=30,
          msg="panels not at the URL's step 10")
    for name in empty:
        fig = browser.graph(dash_duo, name)
        assert fig and not fig["data"], f"{name} should show why it has no data"
        until(lambda: not dash_duo.driver.execute_script(
            f"return document.getElementById('panel-{name}').offsetParent !== null"),
            timeout=10, msg=f"{name} has no data and should be hidden")
    assert browser.overflowing(dash_duo) == [], "a figure spills out of its panel"

    # keyboard on the slider handle, as a user would
    handle = dash_duo.find_element("#step-slider [role=slider]")
    handle.click()
    for _ in range(5):
        handle.send_keys(Keys.ARROW_RIGHT)
    until(lambda: _followed(dash_duo, 15, drawn), timeout=20, msg="panels did not follow the slider")
    until(lambda: "step=15" in dash_duo.driver.current_url, timeout=10)

    # play at a chosen speed, then pause: every panel agrees on where it stopped
    dash_duo.select_dcc_dropdown("#speed", value="1 step/s")  # one step a second
    dash_duo.find_element("#play").click()
    until(lambda: slider_value(dash_duo) >= 17, timeout=30, msg="play did not advance")
    dash_duo.find_element("#play").click()
    dash_duo.wait_for_text_to_equal("#play", "▶ Play", timeout=10)
    stopped = slider_value(dash_duo)
    until(lambda: _followed(dash_duo, stopped, drawn), timeout=20, msg="panels disagree after pause")
    assert 17 <= stopped < STEPS - 1 and slider_value(dash_duo) == stopped
    assert browser.overflowing(dash_duo) == [], "a figure spills out of its panel"

    # an event row: jump to its step, highlight its layer
    row = dash_duo.find_element(".events-table .event-row")
    row.click()
    until(lambda: _followed(dash_duo, 33, drawn), timeout=20, msg="the event row did not move the step")
    fig = browser.graph(dash_duo, "activations")
    assert any(s["name"] == "highlight" for s in fig["shapes"])
    until(lambda: "layer=2" in dash_duo.driver.current_url and "step=33" in
          dash_duo.driver.current_url, timeout=10)
    assert dash_duo.get_logs() == [], "browser console should contain no error"
