"""The page: top bar (runs, live pause), replay bar (play, speed, step slider) and panel cards.

Component ids of panel parts are pattern-matching dicts ``{"type": ..., "panel": NAME}`` so one
callback serves every panel. The layout is a function, evaluated on each page load, so a reload
lists the runs that exist now.
"""

from __future__ import annotations

from dash import dcc, html

from dashboard import figures, settings
from dashboard.panels import PANELS

GRAPH, EXTRA, STATE, OPTIONS = "panel-graph", "panel-extra", "panel-state", "panel-options"
"""``type`` of the pattern-matching ids of a panel's graph, extra content, state, toggles."""


def pid(kind: str, panel: str) -> dict:
    """The id of part ``kind`` of panel ``panel``."""
    return {"type": kind, "panel": panel}


def page(catalog, poll_interval_ms: int = settings.POLL_INTERVAL_MS) -> html.Div:
    """The whole page for ``catalog``'s log directory."""
    return html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="view"),
        dcc.Store(id="heads"),
        dcc.Store(id="playing", data=False),
        dcc.Store(id="play-min-ms", data=settings.PLAY_INTERVAL_MS),
        dcc.Interval(id="tick", interval=poll_interval_ms, n_intervals=0),
        dcc.Interval(id="play-tick", interval=settings.PLAY_INTERVAL_MS, disabled=True),
        top_bar(catalog),
        replay_bar(),
        html.Main([panel_card(p) for p in PANELS], className="panels"),
    ], className="page")


def top_bar(catalog) -> html.Header:
    """Title, log directory, run picker (several runs are compared), live pause."""
    names = catalog.names()
    return html.Header([
        html.Div([html.Span("avionics", className="brand"),
                  html.Span(catalog.logdir, className="logdir", title="log directory")],
                 className="brand-box"),
        dcc.Dropdown(id="run-select", options=run_options(names, catalog), value=[],
                     multi=True, placeholder="Select runs (two or more to compare)",
                     className="run-select"),
        html.Button("Pause live", id="pause", n_clicks=0, className="button",
                    title="stop polling for new steps (the page keeps what it has)"),
    ], className="top-bar")


def run_options(names: list, catalog) -> list:
    """Dropdown options for run names."""
    return [{"label": catalog.display_name(n), "value": n} for n in names]


def replay_bar() -> html.Div:
    """Play/pause, speed and the one step slider that moves every panel."""
    speeds = [{"label": f"{s:,} step{'' if s == 1 else 's'}/s", "value": s}
              for s in settings.PLAY_SPEEDS]
    return html.Div([
        html.Button("▶ Play", id="play", n_clicks=0, className="button"),
        dcc.Dropdown(id="speed", options=speeds, value=settings.DEFAULT_PLAY_SPEED,
                     clearable=False, searchable=False, className="speed"),
        html.Div(dcc.Slider(id="step-slider", min=0, max=0, step=1, value=0, marks=None,
                            updatemode="mouseup", allow_direct_input=False,
                            tooltip={"placement": "bottom", "always_visible": False}),
                 className="slider-box"),
        html.Span("", id="step-label", className="step-label"),
    ], className="replay-bar")


def panel_card(panel) -> html.Section:
    """A panel's card: title, toggles, graph, extra content (tables, notes) and its state."""
    toggles = [{"label": label, "value": value} for value, label in panel.OPTIONS]
    graph = getattr(panel, "GRAPH", True)
    return html.Section([
        html.Div([html.H2(panel.TITLE),
                  dcc.Checklist(id=pid(OPTIONS, panel.NAME), options=toggles, value=[],
                                inline=True, className="panel-options")],
                 className="panel-head"),
        dcc.Graph(id=pid(GRAPH, panel.NAME), figure=figures.placeholder("loading…"),
                  config={"displaylogo": False, "responsive": True,
                          "displayModeBar": "hover"},
                  style={} if graph else {"display": "none"}),
        html.Div(id=pid(EXTRA, panel.NAME), className="panel-extra"),
        dcc.Store(id=pid(STATE, panel.NAME)),
    ], className=f"panel panel-{panel.NAME}", id=f"panel-{panel.NAME}")
