"""Browser: a slider move leaves an unchanged heatmap alone (assets/plotly_react.js): the arrays
plotly holds keep their identity, so Plotly.react recomputes nothing, and they still hold
exactly the values the server sent."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from dash.testing.wait import until
from selenium.webdriver.common.keys import Keys

from dashboard import create_app, refresh
from dashboard.panels import activations
from dashboard.panels.base import View
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser

MARK_JS = """
const gd = document.getElementById(JSON.stringify({panel: 'activations', type: 'panel-graph'}))
  .querySelector('.js-plotly-plot');
window.__kept = gd.data.filter(t => t.type === 'heatmap').map(t => [t.z, t.x]);
window.__ticks = gd.layout.yaxis.tickvals;
window.__calc = gd.calcdata;
"""

SAME_JS = """
const gd = document.getElementById(JSON.stringify({panel: 'activations', type: 'panel-graph'}))
  .querySelector('.js-plotly-plot');
const heat = gd.data.filter(t => t.type === 'heatmap');
return {same: heat.length === window.__kept.length &&
              heat.every((t, i) => t.z === window.__kept[i][0] && t.x === window.__kept[i][1]),
        ticks: gd.layout.yaxis.tickvals === window.__ticks,
        calc: gd.calcdata === window.__calc,
        z: heat.map(t => Array.from(t.z, row => Array.from(row))),
        x: heat.map(t => Array.from(t.x))};
"""


def _decode(spec) -> np.ndarray:
    arr = np.frombuffer(base64.b64decode(spec["bdata"]), "<" + spec["dtype"])
    shape = [int(d) for d in spec.get("shape", str(arr.size)).split(",")]
    return arr.reshape(shape)


def test_redraw001_a_cursor_move_keeps_heatmap_arrays(dash_duo, tmp_path):
    stores.write_run(str(tmp_path / "r"), steps=40)
    app = create_app(str(tmp_path))
    dash_duo.start_server(app)
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?run=r&step=10")
    until(lambda: browser.cursor_steps(dash_duo, "activations") == [10] * 3, timeout=30,
          msg="activations not drawn at step 10")
    dash_duo.driver.execute_script(MARK_JS)
    handle = dash_duo.find_element("#step-slider [role=slider]")
    handle.click()
    handle.send_keys(Keys.ARROW_RIGHT)  # 11: activations are recorded every 5 steps, so only
    until(lambda: browser.cursor_steps(dash_duo, "activations") == [11] * 3, timeout=20,
          msg="the cursors did not follow the slider")  # the cursors move
    got = dash_duo.driver.execute_script(SAME_JS)
    assert got["same"], "an unchanged heatmap got new arrays: plotly recomputed it"
    assert got["ticks"], "the layer axis got a new tickvals array: plotly recomputed it"
    assert got["calc"], "Plotly.react recomputed the figure for a cursor move"
    # what plotly holds is what the server sent, decoded (an independent decoding here)
    sent = refresh.render(activations, app.catalog, View(["r"], 11)).figure
    heat = [t for t in sent["data"] if t["type"] == "heatmap"]
    assert len(heat) == len(got["z"]) > 0
    for trace, z, x in zip(heat, got["z"], got["x"]):
        want = _decode(trace["z"]).astype(float)
        np.testing.assert_array_equal(np.asarray(z, dtype=float), want)
        np.testing.assert_array_equal(np.asarray(x), _decode(trace["x"]))
    assert dash_duo.get_logs() == [], "browser console should contain no error"
