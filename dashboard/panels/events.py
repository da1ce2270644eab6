"""Events: a timeline of NaN/Inf events (with the module they started in), instrument errors
and diagnosis warnings, and the table of all events, newest first.

Generic over event codes: whatever code a rule writes gets a row on the timeline. Clicking a
table row moves the replay step to the event and highlights its layer in every panel.
"""

from __future__ import annotations

import json

import pandas as pd
from dash import html

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import View
from instrument.store import schema

NAME = "events"
TITLE = "Events and warnings"
REQUIRES = ("<events table>",)
MISSING = ("No events: no NaN/Inf was seen and no warning was raised in the selected runs. "
           "(Non-finite values are checked every step by the 'nonfinite' instrument.)")
OPTIONS = ()
ALWAYS_SHOWN = True
"""Shown even when the runs recorded nothing it draws (it says how to record it)."""
RERENDER_ON = ("events",)
"""A new event (newer event id in the run's head) re-renders the panel."""
ROW_TYPE = "event-row"
"""Component id type of a table row; its ``index`` is ``json.dumps([run, id, step, layer])``."""
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star", "cross", "hexagon")


def needs(keys: dict, options) -> list:
    """Events are not series: everything comes from :func:`load_extra`."""
    return []


def load_extra(run, view: View) -> dict:
    """The run's events (all of them; the table shows the newest)."""
    return {"events": run.events()}


def frame_of(df: pd.DataFrame, run: str, label: str | None = None) -> pd.DataFrame:
    """One run's events with the ``run`` and ``run_label`` columns of :func:`frame`."""
    return df.assign(run=run, run_label=label or run)


def frame(runs: list) -> pd.DataFrame:
    """All runs' events in one frame with ``run`` and ``run_label`` columns, newest first."""
    parts = []
    for item in runs:
        df = item.extra.get("events")
        if df is not None and len(df):
            parts.append(df.assign(run=item.id, run_label=item.label))
    if not parts:
        return pd.DataFrame(columns=["id", "step", "code", "severity", "layer", "message",
                                     "suggestion", "run", "run_label"])
    df = pd.concat(parts, ignore_index=True)
    return df.sort_values(["wall_time", "id"], ascending=False, ignore_index=True)


def figure(runs: list, view: View) -> dict:
    """Timeline: one row per event code, markers coloured by severity, one symbol per run."""
    df = frame(runs)
    timed = df[df["step"].notna()] if len(df) else df
    if not len(timed):
        return figures.placeholder(MISSING, height=settings.PLACEHOLDER_SMALL_PX)
    codes = sorted(timed["code"].unique())
    height = max(settings.SMALL_ROW_HEIGHT_PX, settings.EVENT_ROW_PX * len(codes))
    grid = Grid([(height, [1])])
    cell = grid.cells[0][0]
    counts = timed["code"].value_counts()
    grid.axis(cell, "y").update({"type": "category", "categoryorder": "array",
                                 "categoryarray": codes, "tickvals": codes,
                                 "ticktext": [f"{c} ({counts[c]})" for c in codes]})
    grid.axis(cell, "x")["title"] = {"text": "step", "standoff": 2}
    span = run_span(runs, [int(x) for x in timed["step"]])
    if span is not None:  # the whole run, not just the stretch with events
        grid.axis(cell, "x")["range"] = list(span)
    data = []
    for r, item in enumerate(runs):
        for severity in schema.SEVERITIES:
            sel = timed[(timed["run"] == item.id) & (timed["severity"] == severity)]
            if not len(sel):
                continue
            layers = [("" if pd.isna(v) else str(v)) for v in sel["layer"]]
            data.append({
                # the layer is in the hover: labels drawn beside the markers would overlap
                "type": "scatter", "mode": "markers", "x": [int(s) for s in sel["step"]],
                "y": list(sel["code"]), "text": layers,
                "customdata": list(sel["message"]),
                "hovertemplate": "step %{x} · %{y}<br>%{text}<br>%{customdata}<extra></extra>",
                "name": f"{item.label} {severity}" if len(runs) > 1 else severity,
                "marker": {"color": settings.SEVERITY_COLOURS[severity],
                           "size": settings.EVENT_MARKER_PX,
                           "symbol": SYMBOLS[r % len(SYMBOLS)], "line": {"width": 0}},
                "xaxis": cell.xref, "yaxis": cell.yref})
    shapes = [figures.cursor(cell, view.step)]
    return figures.figure(data, figures.base_layout(grid, shapes=shapes))


def run_span(runs: list, steps: list) -> tuple | None:
    """``(first, last)`` step over ``runs`` and the event ``steps``, padded by half a percent."""
    firsts = [r.first_step for r in runs if r.first_step is not None] + list(steps)
    lasts = [r.last_step for r in runs if r.last_step is not None] + list(steps)
    if not lasts:
        return None
    lo, hi = min(firsts), max(lasts)
    pad = max(0.5, 0.005 * (hi - lo))
    return lo - pad, hi + pad


def extra(runs: list, view: View):
    """The events table (clickable rows), newest first, at most ``MAX_EVENT_ROWS`` rows."""
    df = frame(runs)
    if not len(df):
        return None  # the timeline's placeholder says why
    compare = len(runs) > 1
    head = ["step"] + (["run"] if compare else []) + ["severity", "code", "layer", "message"]
    rows = []
    for rec in df.head(settings.MAX_EVENT_ROWS).itertuples(index=False):
        step = None if pd.isna(rec.step) else int(rec.step)
        layer = None if pd.isna(rec.layer) else str(rec.layer)
        selected = step is not None and step == view.step and layer == view.layer
        cells = [html.Td("-" if step is None else str(step))]
        cells += [html.Td(rec.run_label)] if compare else []
        cells += [html.Td(html.Span(rec.severity, className=f"badge sev-{rec.severity}")),
                  html.Td(rec.code), html.Td(layer or ""),
                  html.Td([html.Div(rec.message)]
                          + ([html.Div(rec.suggestion, className="suggestion")]
                             if isinstance(rec.suggestion, str) and rec.suggestion else []))]
        rows.append(html.Tr(cells, n_clicks=0, className="event-row selected" if selected
                            else "event-row",
                            id={"type": ROW_TYPE,
                                "index": json.dumps([rec.run, int(rec.id), step, layer])}))
    more = len(df) - settings.MAX_EVENT_ROWS
    table = html.Table([html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)],
                       className="events-table")
    note = [html.Div(f"{more} older events not shown", className="panel-note")] if more > 0 else []
    return html.Div([table] + note)


def parse_row_id(index: str) -> tuple:
    """``(run, event id, step, layer)`` from a table row's (or a *show* button's) id index."""
    run, event_id, step, layer = json.loads(index)[:4]
    return run, event_id, step, layer
