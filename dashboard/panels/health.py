"""Health strip: what is wrong with the selected runs, at the top of the page.

Per run: its status, the number of critical, warning and info findings, a banner when its values
went NaN/Inf or the run crashed. Then the findings of all selected runs, ranked and grouped (see
:mod:`dashboard.findings`): root causes before their consequences, one row per code with its
layers underneath. Each row's *show* button moves the replay step to the finding, highlights its
layer and scrolls to the panel that holds its evidence. Last, one line names the panels that
were not recorded, with how to record them (those panels are hidden).
"""

from __future__ import annotations

from dash import html

from dashboard import findings, settings
from dashboard.panels import events as events_panel
from dashboard.panels.base import View
from instrument.store import schema

NAME = "health"
TITLE = "Health"
REQUIRES = ("<events table>", "<run metadata>")
MISSING = "No run selected. Pick one or more runs in the runs table above."
OPTIONS = ()
GRAPH = False
ALWAYS_SHOWN = True
RERENDER_ON = ("events", "status", "series")
"""Head fields whose change re-renders the strip: a new finding, a status change, new series."""
SHOW_TYPE = events_panel.ROW_TYPE
"""*Show* buttons share the event rows' id type: the navigation treats both alike (step, layer);
their index carries the evidence panel as a fifth element, which the page scrolls to."""


def needs(keys: dict, options) -> list:
    """The strip reads events and metadata only."""
    return []


def load_extra(run, view: View) -> dict:
    """Every event of the run and the keys it recorded (to list what was not recorded)."""
    return {"events": run.events(),
            "keys": {k: run.keys(k) for k in (schema.SCALAR, schema.LAYER)}}


def figure(runs: list, view: View):
    """No graph."""
    return None


def extra(runs: list, view: View):
    """Run lines (status, counts, banners), ranked findings, what was not recorded."""
    if not runs:
        return html.Div(MISSING, className="panel-note")
    df = events_panel.frame([r for r in runs if not r.error])
    groups = findings.groups(df)
    parts = [html.Div([run_line(item, df) for item in runs], className="health-runs")]
    parts += banners(runs, df)
    parts.append(finding_list(groups, view, compare=len(runs) > 1))
    parts.append(not_recorded(runs))
    return html.Div([p for p in parts if p is not None], className="health")


def run_line(item, df):
    """``● run  finished  2 critical  5 warning  0 info  · 1,500 steps``."""
    swatch = html.Span(className="swatch", style={"background": item.colour})
    if item.error:
        return html.Div([swatch, html.B(item.label),
                         html.Span("unreadable", className="status status-error"),
                         html.Span(item.error, className="run-error")], className="health-run")
    status = item.meta.get("status", "unknown")
    mine = df[df["run"] == item.id] if len(df) else df
    counts = findings.counts(mine)
    badges = [html.Span(f"{counts[s]} {s}", className=f"count sev-{s}" + (" zero" if not
                                                                           counts[s] else ""),
                        id={"type": "health-count", "index": f"{item.id}|{s}"})
              for s in (schema.CRITICAL, schema.WARNING, schema.INFO)]
    steps = ("no step yet" if item.last_step is None
             else f"{item.last_step + 1:,} steps")
    return html.Div([swatch, html.B(item.label),
                     html.Span(status, className=f"status status-{status}")] + badges
                    + [html.Span(steps, className="muted")], className="health-run")


def banners(runs: list, df) -> list:
    """A red banner per run whose values went NaN/Inf, and per crashed run."""
    out = []
    for item in runs:
        if item.error:
            continue
        mine = df[df["run"] == item.id] if len(df) else df
        bad = findings.nonfinite_steps(mine)
        prefix = f"{item.label}: " if len(runs) > 1 else ""
        if bad:
            first = mine[(mine["code"] == schema.NONFINITE) & (mine["step"] == bad[0])]
            what = str(first["message"].iloc[-1]) if len(first) else ""
            out.append(html.Div([html.B(f"{prefix}NaN/Inf from step {bad[0]:,}"),
                                 f" ({len(bad)} step{'s' if len(bad) > 1 else ''} with "
                                 f"non-finite values). {what}"],
                                className="banner banner-nonfinite"))
        if item.meta.get("status") == schema.CRASHED:
            why = item.meta.get("error") or ("the training process stopped without closing "
                                            "the run (killed, or its heartbeat stopped)")
            out.append(html.Div([html.B(f"{prefix}The run crashed"), f": {why}"],
                                className="banner banner-crashed"))
    return out


def finding_list(groups: list, view: View, compare: bool):
    """The ranked, grouped findings with their *show* buttons (the first few open, the rest
    behind a "more" fold)."""
    if not groups:
        return html.Div("No findings: no NaN/Inf was seen and no rule raised a warning.",
                        className="panel-note health-none")
    rows = [finding_row(g, view, compare) for g in groups]
    shown = settings.HEALTH_FINDINGS
    body = rows[:shown]
    if len(rows) > shown:
        body.append(html.Details([html.Summary(f"{len(rows) - shown} more findings")]
                                 + rows[shown:], className="health-more"))
    return html.Div(body, className="findings", id="findings")


def finding_row(g, view: View, compare: bool):
    """One group: severity, ``code: N layers ▸`` (the layers fold out), step, message, show."""
    head = [html.Span(g.severity, className=f"badge sev-{g.severity}")]
    if compare:
        head.append(html.Span(g.run_label, className="finding-run"))
    if len(g.layers) > 1:
        what = html.Details([html.Summary(g.summary(), className="finding-code"),
                             html.Div(", ".join(g.layers), className="finding-layers")],
                            className="finding-group")
    else:
        layer = f" ({g.layers[0]})" if g.layers else ""
        what = html.Span(g.summary() + layer, className="finding-code")
    step = html.Span("" if g.step is None else f"step {g.step:,}", className="finding-step")
    role = {findings.CAUSE: "likely cause", findings.CONSEQUENCE: "consequence"}.get(g.role)
    tags = [html.Span(role, className=f"role role-{g.role}")] if role else []
    show = html.Button("show", n_clicks=0, className="button show",
                       title=f"move to step {g.step}, highlight {g.layer or 'the layer'} and "
                             f"scroll to the {g.panel} panel",
                       id={"type": SHOW_TYPE, "index": g.show_index()})
    selected = g.step is not None and g.step == view.step and g.layer == view.layer
    return html.Div([html.Div(head + [what, step] + tags + [show], className="finding-head"),
                     html.Div(g.message, className="finding-message")],
                    className="finding selected" if selected else "finding",
                    **{"data-code": g.code, "data-severity": g.severity})


def not_recorded(runs: list):
    """One line: the panels none of the runs recorded (hidden), each with how to record it."""
    from dashboard.panels import PANELS, recorded  # the panel list includes this module
    from dashboard.panels.base import hook, nan_explains

    good = [item for item in runs if item.extra.get("keys")]
    if not good:
        return None
    for item in good:
        bad = findings.nonfinite_steps(_events_of(item))
        item.nonfinite_step = bad[0] if bad else None
    missing = [p for p in PANELS if not hook(p, "ALWAYS_SHOWN")
               and not any(recorded(p, item.extra["keys"]) or nan_explains(p, item)
                           for item in good)]
    if not missing:
        return None
    items = [html.Span(p.TITLE, title=p.MISSING, className="unrecorded") for p in missing]
    how = html.Details([html.Summary("how to record them")]
                       + [html.Div([html.B(p.TITLE + ": "), p.MISSING]) for p in missing],
                       className="unrecorded-how")
    line = [html.Span("Not recorded (panels hidden): ", className="muted")]
    for i, span in enumerate(items):
        line += ([" · "] if i else []) + [span]
    return html.Div([html.Div(line), how], className="health-unrecorded", id="unrecorded")


def _events_of(item):
    df = item.extra.get("events")
    return None if df is None else df.assign(run=item.id, run_label=item.label)
