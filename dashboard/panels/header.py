"""Run header: status (running, finished, crashed), steps, wall time, model and optimizer.

One card per selected run; a run that cannot be read gets a card that says why.
"""

from __future__ import annotations

import time

from dash import html

from dashboard.panels.base import View
from instrument.store import schema

NAME = "header"
TITLE = "Runs"
REQUIRES = ("<run metadata>",)
MISSING = "No run selected. Pick one or more runs above (several runs are compared)."
OPTIONS = ()
GRAPH = False
ALWAYS_SHOWN = True
"""Shown even when the runs recorded nothing it draws (it says how to record it)."""
RERENDER_ON = ("last", "status", "series")
"""Head fields (see :meth:`dashboard.runs.RunCatalog.head`) whose change re-renders the panel."""
HYPERPARAMS = ("lr", "momentum", "betas", "weight_decay", "eps")
"""Optimizer settings shown in the header, when the optimizer has them."""


def needs(keys: dict, options) -> list:
    """The header reads metadata only."""
    return []


def load_extra(run, view: View) -> dict:
    """Wall time at the selected step (from the step's row in the store)."""
    step = view.step
    if step is None:
        return {}
    rows = run.scalars(start=step, stop=step)
    return {"wall_at_step": float(rows["wall_time"].iloc[0]) if len(rows) else None}


def figure(runs: list, view: View):
    """No graph."""
    return None


def extra(runs: list, view: View):
    """A card per run."""
    if not runs:
        return html.Div(MISSING, className="panel-note")
    return html.Div([card(item, view) for item in runs], className="run-cards")


def card(item, view: View):
    """The card of one run (or of why it cannot be shown)."""
    swatch = html.Span(className="swatch", style={"background": item.colour})
    if item.error:
        return html.Div([html.Div([swatch, html.B(item.label),
                                   html.Span("unreadable", className="status status-error")],
                                  className="card-title"),
                         html.Div(item.error, className="run-error")],
                        className="run-card error", id={"type": "run-card", "index": item.id})
    meta = item.meta
    status = meta.get("status", "unknown")
    facts = [_steps(item), _wall(meta), _at_step(item, view), _model(meta), _optimizer(meta)]
    if meta.get("error"):
        facts.append(html.Div(f"error: {meta['error']}", className="run-error"))
    return html.Div([html.Div([swatch, html.B(item.label),
                               html.Span(status, className=f"status status-{status}")],
                              className="card-title")]
                    + [f for f in facts if f is not None],
                    className="run-card", id={"type": "run-card", "index": item.id})


def duration(seconds: float) -> str:
    """``1h 02m 03s`` / ``2m 03s`` / ``4.2s``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _steps(item):
    if item.last_step is None:
        return html.Div("no step logged yet", className="fact")
    return html.Div(f"steps {item.first_step}..{item.last_step} ({item.last_step + 1:,} logged)",
                    className="fact")


def _wall(meta: dict):
    start = meta.get("start_time")
    if start is None:
        return None
    end = meta.get("end_time") if meta.get("status") != schema.RUNNING else None
    return html.Div(f"wall time {duration((end or time.time()) - start)}", className="fact")


def _at_step(item, view: View):
    if view.step is None:
        return None
    wall, start = item.extra.get("wall_at_step"), item.meta.get("start_time")
    when = f" (at {duration(wall - start)})" if wall is not None and start else ""
    return html.Div(f"viewing step {view.step}{when}", className="fact at-step")


def _model(meta: dict):
    model = meta.get("model") or {}
    if not model:
        return None
    params = model.get("parameters")
    text = f"model {model.get('class', '?')}"
    if params is not None:
        text += f", {params:,} parameters, {len(model.get('layers', []))} layers"
    return html.Div(text, className="fact")


def _optimizer(meta: dict):
    opt = meta.get("optimizer") or {}
    if not opt.get("class"):
        return None
    groups = opt.get("param_groups") or [{}]
    first = groups[0]
    shown = ", ".join(f"{k}={_fmt(first[k])}" for k in HYPERPARAMS if k in first)
    more = f" ({len(groups)} param groups)" if len(groups) > 1 else ""
    return html.Div(f"optimizer {opt['class']}({shown}){more}", className="fact")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    return str(value)
