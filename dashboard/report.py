"""A static report of one run: one self-contained HTML file, no server, to attach to a pull
request or send to a colleague.

    write_report("runs/exp1", "exp1.html")      # or: avionics report runs/exp1 -o exp1.html

It holds what the dashboard's first screen says (status, finding counts, NaN/Inf and crash
banners, the findings ranked and grouped), the run header, and every panel the run recorded,
drawn with the same pure figure functions as the dashboard at the last step. plotly.js is
inlined once, so the file opens from disk in any browser, offline.
"""

from __future__ import annotations

import html as html_escape
import json
import os

import numpy as np
from plotly.offline import get_plotlyjs
from plotly.utils import PlotlyJSONEncoder

from dashboard import refresh
from dashboard.panels import PANELS
from dashboard.panels.base import View
from dashboard.runs import RunCatalog
from instrument.store.reader import load

CSS = os.path.join(os.path.dirname(__file__), "assets", "style.css")
VOID = {"br", "hr", "img", "input", "meta", "link"}


def write_report(run_dir: str, out: str) -> str:
    """Write the report of the run in ``run_dir`` to ``out``; returns ``out``.

    Raises:
        StoreError: the run cannot be read (the message says why).
    """
    load(run_dir, integrity=False)  # a clear StoreError for a missing or bad store
    page = render_report(run_dir)
    with open(out, "w", encoding="utf-8") as fh:
        fh.write(page)
    return out


def render_report(run_dir: str) -> str:
    """The report's HTML text (see the module docstring)."""
    catalog = RunCatalog(run_dir)
    view = View(["."])
    sections = []
    for n, panel in enumerate(PANELS):
        out = refresh.render(panel, catalog, view)
        if out.empty:
            continue
        sections.append(_section(panel, out, n))
    title = html_escape.escape(catalog.display_name("."))
    with open(CSS, encoding="utf-8") as fh:
        css = fh.read()
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>avionics report: {title}</title><style>{css}{REPORT_CSS}</style>"
            f"<script>{get_plotlyjs()}</script></head><body><div class='page report'>"
            f"<header class='top-bar'><span class='brand'>avionics</span>"
            f"<span class='logdir'>report of {html_escape.escape(os.path.abspath(run_dir))}"
            "</span></header><main class='panels'>" + "".join(sections)
            + "</main></div></body></html>")


REPORT_CSS = ".report .button.show { display: none; } .report .event-row { cursor: default; }"
"""Buttons that need the server (show, row clicks) do nothing in a static file: hidden."""


def _section(panel, out, n: int) -> str:
    parts = [f"<h2>{html_escape.escape(panel.TITLE)}</h2>"]
    fig = out.figure
    if isinstance(fig, dict) and fig.get("data") is not None:
        div = f"graph-{n}"
        height = (fig.get("layout") or {}).get("height") or 300
        spec = json.dumps({"data": fig["data"], "layout": {**fig["layout"],
                                                           "uirevision": None}},
                          cls=PlotlyJSONEncoder)
        parts.append(f"<div id='{div}' class='js-report-graph' style='height:{height}px'></div>"
                     f"<script>Plotly.newPlot('{div}', ...(s => [s.data, s.layout])({spec}),"
                     "{displaylogo: false, responsive: true});</script>")
    if out.extra is not None and out.extra is not refresh.no_update:
        parts.append(to_html(out.extra))
    return f"<section class='panel' id='panel-{panel.NAME}'>{''.join(parts)}</section>"


def to_html(component) -> str:
    """Static HTML of Dash ``html`` components (tags, classes, styles, text; no callbacks)."""
    if component is None:
        return ""
    if isinstance(component, (list, tuple)):
        return "".join(to_html(c) for c in component)
    if isinstance(component, (str, int, float, np.integer, np.floating)):
        return html_escape.escape(str(component))
    spec = component.to_plotly_json()
    props = spec.get("props", {})
    tag = spec["type"].lower()
    attrs = []
    if props.get("className"):
        attrs.append(f'class="{html_escape.escape(props["className"])}"')
    if isinstance(props.get("id"), str):
        attrs.append(f'id="{html_escape.escape(props["id"])}"')
    if props.get("title"):
        attrs.append(f'title="{html_escape.escape(str(props["title"]))}"')
    if props.get("style"):
        css = ";".join(f"{_kebab(k)}:{v}" for k, v in props["style"].items())
        attrs.append(f'style="{html_escape.escape(css)}"')
    if tag == "details" and props.get("open"):
        attrs.append("open")
    for key, value in props.items():
        if key.startswith("data-"):
            attrs.append(f'{key}="{html_escape.escape(str(value))}"')
    head = f"<{tag}{' ' if attrs else ''}{' '.join(attrs)}>"
    if tag in VOID:
        return head
    return head + to_html(props.get("children")) + f"</{tag}>"


def _kebab(name: str) -> str:
    return "".join("-" + c.lower() if c.isupper() else c for c in name)
