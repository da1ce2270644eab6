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
