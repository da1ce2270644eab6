"""Browser: comparing 4 runs: titles never overlap, heatmaps share one colour scale, legends name
runs only, and the highlighted layer is overlaid across the runs."""

from __future__ import annotations

import pytest
from dash.testing.wait import until

from dashboard import create_app
from tests.dashboard import browser, stores

pytestmark = pytest.mark.browser
RUNS = ("alpha-long-run-name", "beta-long-run-name", "gamma-long-run-name", "delta-long-run")

OVERLAPS_JS = """
const out = [];
for (const panel of document.querySelectorAll('.panel')) {
  const boxes = [...panel.querySelectorAll('.annotation-text')].map(e => [e.textContent,
    e.getBoundingClientRect()]).filter(([t, r]) => r.width > 0);
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i][1], b = boxes[j][1];
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1
          && b.top < a.bottom - 1) { out.push([panel.id, boxes[i][0], boxes[j][0]]); }
    }
  }
}
return out;
"""

HEAT_JS = """
const gd = document.getElementById(JSON.stringify({panel: arguments[0], type: 'panel-graph'}))
  .querySelector('.js-plotly-plot');
return gd.data.filter(t => t.type === 'heatmap').map(t => [t.zmin, t.zmax, t.showscale]);
"""

LEGEND_JS = """
const gd = document.getElementById(JSON.stringify({panel: arguments[0], type: 'panel-graph'}))
  .querySelector('.js-plotly-plot');
return gd.data.filter(t => t.showlegend !== false && gd.layout.showlegend).map(t => t.name);
"""


def test_compare002_four_runs(dash_duo, tmp_path):
    for i, name in enumerate(RUNS):
        stores.write_run(str(tmp_path / name), steps=20 + 5 * i)
    dash_duo.driver.set_window_size(1600, 1000)
    dash_duo.start_server(create_app(str(tmp_path)))
    query = "&".join(f"run={r}" for r in RUNS) + "&layer=2.weight"
    dash_duo.wait_for_page(f"{dash_duo.server_url}/?{query}")

    def heats():
        try:
            return dash_duo.driver.execute_script(HEAT_JS, "grad_norm")
        except Exception:  # not drawn yet
            return []

    until(lambda: len(heats()) == 4, timeout=40, msg="not every run's heatmap was drawn")
    ranges = heats()
    assert len({(lo, hi) for lo, hi, _ in ranges}) == 1, ranges  # one colour scale
    assert [s for _, _, s in ranges] == [False, False, False, True]  # one colour bar
    until(lambda: len(browser.graph(dash_duo, "activations") or {"data": []}) and
          len([t for t in browser.graph(dash_duo, "activations")["data"]
               if t["type"] == "heatmap"]) == 12, timeout=40)
    assert dash_duo.driver.execute_script(OVERLAPS_JS) == []
    assert set(dash_duo.driver.execute_script(LEGEND_JS, "scalars")) == set(RUNS)
    assert dash_duo.driver.execute_script(LEGEND_JS, "update_ratio") == []
    fig = browser.graph(dash_duo, "grad_norm")
    assert "grad norm of 2.weight, runs overlaid" in fig["annotations"]
    assert {t["name"] for t in fig["data"] if t["type"] == "scatter"
            and (t.get("meta") or {}) == {}} >= set(RUNS)
    assert dash_duo.get_logs() == [], "browser console should contain no error"
