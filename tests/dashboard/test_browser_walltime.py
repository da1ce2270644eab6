"""Browser: in a comparison of two runs with different step times, the *wall time* toggle puts
the loss and gradient-norm lines on seconds since each run's start, each run's replay cursor at
its own wall time of the selected step; toggling back returns to steps."""

from __future__ import annotations

import os

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.keys import Keys

from dashboard import create_app, walltime
from tests.dashboard import browser
from tests.dashboard.test_walltime import START, brute, write

pytestmark = pytest.mark.browser

AXES_JS = """
const el = document.getElementById(JSON.stringify({panel: arguments[0], type: 'panel-graph'}));
const gd = el && el.querySelector('.js-plotly-plot');
if (!gd || !gd.layout) { return null; }
const t = gd.layout.xaxis && gd.layout.xaxis.title;
return (t && (t.text || t)) || null;
"""


def loss_x(dash_duo, panel: str, key: str) -> dict:
    fig = browser.graph(dash_duo, panel) or {"data": []}
    return {t["meta"]["live"]["run"]: t["x"] for t in fig["data"]
            if (t.get("meta") or {}).get("live", {}).get("key") == key
            and t["meta"]["live"]["stat"] == "mean" and not t["meta"]["live"].get("ema")}


def close(got: list, want: list) -> bool:
    return len(got) == len(want) and np.allclose(sorted(got), sorted(want), atol=2e-3)


def toggle(dash_duo, panel: str) -> None:
    """Click the panel's wall-time toggle."""
    box = dash_duo.find_element(f"[id='{browser.element_id('panel-options', panel)}']")
    for label in box.find_elements("css selector", "label"):
        if label.text.strip() == walltime.OPTION[1]:
            label.find_element("css selector", "input").click()
            return
    raise AssertionError("no wall-time toggle")


def test_toggle_wall_time_with_two_runs(dash_duo, tmp_path):
    starts = {"fast": START, "slow": START + 50.0}
    write(str(tmp_path / "fast"), 60, seed=1)
    write(str(tmp_path / "slow"), 60, seed=2, start=starts["slow"])
    dash_duo.start_server(create_app(str(tmp_path)))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=fast&run=slow&step=31")
    until(lambda: set(loss_x(dash_duo, "scalars", "loss")) == {"fast", "slow"}, timeout=60)
    steps = {r: x for r, x in loss_x(dash_duo, "scalars", "loss").items()}
    assert steps["fast"][:3] == [0, 3, 6]  # by step
    assert dash_duo.driver.execute_script(AXES_JS, "scalars") == "step"

    toggle(dash_duo, "scalars")
    until(lambda: dash_duo.driver.execute_script(AXES_JS, "scalars") == walltime.AXIS_TITLE,
          timeout=60, msg="the x axis is not titled in seconds")
    for run in ("fast", "slow"):
        want = brute(os.path.join(str(tmp_path), run), steps[run], starts[run])
        until(lambda: len(loss_x(dash_duo, "scalars", "loss").get(run) or []) == len(want),
              timeout=30)
        np.testing.assert_allclose(loss_x(dash_duo, "scalars", "loss")[run], want, atol=2e-3)
    cursors = sorted(browser.cursor_steps(dash_duo, "scalars"))
    want = sorted(brute(os.path.join(str(tmp_path), r), [31], starts[r])[0] for r in starts)
    np.testing.assert_allclose(cursors, want, atol=2e-3)  # 31: between logged steps 30 and 33

    # the slider (keyboard, as a user would) moves each run's cursor to its wall time of the
    # new step, in both panels on wall time
    toggle(dash_duo, "grad_norm")
    until(lambda: dash_duo.driver.execute_script(AXES_JS, "grad_norm") == walltime.AXIS_TITLE,
          timeout=60)
    handle = dash_duo.find_element("#step-slider [role=slider]")
    for _ in range(3):
        handle.send_keys(Keys.ARROW_RIGHT)
    want = sorted(brute(os.path.join(str(tmp_path), r), [34], starts[r])[0] for r in starts)
    # (the grad-norm heatmaps keep their step axis, and their cursors at step 34)
    for panel, also in (("scalars", []), ("grad_norm", [34, 34])):
        until(lambda: close(browser.cursor_steps(dash_duo, panel), want + also), timeout=30,
              msg=f"{panel}: the cursors are not at step 34's wall time of each run")

    toggle(dash_duo, "grad_norm")
    until(lambda: dash_duo.driver.execute_script(AXES_JS, "grad_norm") == "step", timeout=60)
    assert dash_duo.get_logs() == [], "browser console should contain no error"
