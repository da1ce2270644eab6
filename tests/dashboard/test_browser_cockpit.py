"""The Cockpit panels in a real browser: they draw a run's Cockpit series, follow the replay
slider (cursors, per-parameter bars, the 1-D histogram's bars and the redrawn 2-D heatmap),
and leave the console clean."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard.app import create_app
from dashboard.panels import COCKPIT
from tests.dashboard import browser
from tests.dashboard.test_panel_cockpit import write_cockpit_run

pytestmark = pytest.mark.browser
GRAPHS = [p.NAME for p in COCKPIT if getattr(p, "GRAPH", True)]
HEAT_STEP_JS = """
const el = document.getElementById(JSON.stringify({panel: 'cockpit_hist_2d',
                                                   type: 'panel-extra'}));
const gd = el && el.querySelector('.js-plotly-plot');
return (gd && gd.data && gd.data.length) ? gd.data[0].meta.step : null;
"""


def _at(dash_duo, step: int) -> bool:
    for name in GRAPHS:
        cursors = browser.cursor_steps(dash_duo, name)
        if name != "cockpit_hist_1d" and (not cursors or any(c != step for c in cursors)):
            return False
    for name in ("cockpit_gradient_tests", "cockpit_distance", "cockpit_hist_1d"):
        if set(browser.bar_steps(dash_duo, name)) != {step}:
            return False
    return dash_duo.driver.execute_script(HEAT_STEP_JS) == step


def test_cockpit_panels_follow_the_slider(dash_duo, tmp_path):
    write_cockpit_run(str(tmp_path / "c"))
    dash_duo.start_server(create_app(str(tmp_path)))
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=c&step=10")
    until(lambda: _at(dash_duo, 10), timeout=30, msg="Cockpit panels not at step 10")
    for name in GRAPHS:
        fig = browser.graph(dash_duo, name)
        assert fig and fig["data"], f"{name} drew nothing"
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=c&step=21")
    until(lambda: _at(dash_duo, 21), timeout=30, msg="Cockpit panels did not follow to 21")
    assert dash_duo.get_logs() == [], "browser console should contain no error"
