"""Reading the live page from a browser test: figures, traces and text, through plotly's DOM."""

from __future__ import annotations

import json

GRAPH_JS = """
const el = document.getElementById(JSON.stringify({panel: arguments[0], type: 'panel-graph'}));
const gd = el && el.querySelector('.js-plotly-plot');
if (!gd || !gd.data) { return null; }
return {data: gd.data.map(t => ({type: t.type, name: t.name, n: (t.x && t.x.length) || 0,
                                  xaxis: t.xaxis || "x",
                                  x: (t.type === 'heatmap') ? null : t.x,
                                  meta: t.meta || null})),
        shapes: (gd.layout.shapes || []).map(s => ({name: s.name, x0: s.x0,
                                                    visible: s.visible})),
        annotations: (gd.layout.annotations || []).map(a => a.text)};
"""


def graph(dash_duo, panel: str):
    """The drawn figure of ``panel``: traces (type, name, point count, x, meta), shapes, texts."""
    return dash_duo.driver.execute_script(GRAPH_JS, panel)


def live_points(dash_duo, panel: str, key: str, stat: str = "mean") -> int:
    """Points of the appendable line of series ``key`` in ``panel`` (-1 if not drawn)."""
    fig = graph(dash_duo, panel)
    if not fig:
        return -1
    for trace in fig["data"]:
        live = (trace.get("meta") or {}).get("live")
        if live and live["key"] == key and live["stat"] == stat and not live.get("ema"):
            return trace["n"]
    return -1


def cursor_steps(dash_duo, panel: str) -> list:
    """x of every visible cursor line of ``panel``."""
    fig = graph(dash_duo, panel) or {"shapes": []}
    return [s["x0"] for s in fig["shapes"] if s["name"] == "cursor" and s["visible"]]


def bar_steps(dash_duo, panel: str) -> list:
    """The step each bar trace of ``panel`` shows."""
    fig = graph(dash_duo, panel) or {"data": []}
    return [t["meta"]["at_step"]["step"] for t in fig["data"]
            if (t.get("meta") or {}).get("at_step")]


def element_id(kind: str, panel: str) -> str:
    """The DOM id Dash gives the pattern-matching id ``{"type": kind, "panel": panel}``."""
    return json.dumps({"panel": panel, "type": kind}, separators=(",", ":"))


def text(dash_duo, dom_id: str) -> str:
    """Text content of the element with id ``dom_id``."""
    return dash_duo.driver.execute_script(
        "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';", dom_id)


OVERFLOW_JS = """
const out = [];
for (const box of document.querySelectorAll('.panel .dash-graph')) {
  const svg = box.querySelector('.main-svg');
  if (!svg || box.offsetParent === null) { continue; }  // hidden graph (GRAPH = False)
  const drawn = svg.getBoundingClientRect().height, held = box.getBoundingClientRect().height;
  if (drawn > held + 1) { out.push([box.closest('.panel').id, drawn, held]); }
}
return out;
"""


def overflowing(dash_duo) -> list:
    """``[panel id, figure height, box height]`` of every graph drawn taller than its box, i.e.
    spilling over the panels below it (and catching their clicks)."""
    return dash_duo.driver.execute_script(OVERFLOW_JS)


ROWS_JS = """
return [...document.querySelectorAll('#run-select tbody tr')]
  .map(tr => tr.querySelector('td[data-dash-column="name"]'))
  .filter(td => td).map(td => td.textContent);
"""


def open_runs(dash_duo) -> None:
    """Unfold the runs table (it is folded under the top bar)."""
    if not dash_duo.driver.execute_script("return document.getElementById('runs-box').open"):
        dash_duo.find_element("#runs-summary").click()


def table_rows(dash_duo) -> list:
    """Run names on the runs table's current page (after its filter)."""
    return dash_duo.driver.execute_script(ROWS_JS)


def filter_runs(dash_duo, text: str) -> None:
    """Type ``text`` into the runs table's name filter (replacing what was there)."""
    from selenium.webdriver.common.keys import Keys

    open_runs(dash_duo)
    box = dash_duo.find_element('#run-select th.dash-filter[data-dash-column="name"] input')
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(text + "\n")


TICK_JS = """
for (const tr of document.querySelectorAll('#run-select tbody tr')) {
  const td = tr.querySelector('td[data-dash-column="name"]');
  if (td && td.textContent === arguments[0]) {
    tr.querySelector('td.dash-select-cell input').click(); return true;
  }
}
return false;
"""


def tick_run(dash_duo, name: str) -> None:
    """Tick run ``name`` in the runs table (filtering the table to find it)."""
    from dash.testing.wait import until

    filter_runs(dash_duo, name)
    until(lambda: name in table_rows(dash_duo), timeout=20, msg=f"run {name} not listed")
    assert dash_duo.driver.execute_script(TICK_JS, name), f"no row for run {name}"
