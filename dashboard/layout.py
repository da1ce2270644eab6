"""The page: top bar (runs, live pause), replay bar (play, speed, step slider) and panel cards.

Component ids of panel parts are pattern-matching dicts ``{"type": ..., "panel": NAME}`` so one
callback serves every panel. The layout is a function, evaluated on each page load, so a reload
lists the runs that exist now.
"""

from __future__ import annotations

from dash import dcc, html

from dashboard import figures, layer_groups_ui, runs_table, settings
from dashboard.panels import PANELS
from dashboard.panels.base import hook

GRAPH, EXTRA, STATE, OPTIONS = "panel-graph", "panel-extra", "panel-state", "panel-options"
"""``type`` of the pattern-matching ids of a panel's graph, extra content, state, toggles."""
BODY, FILTER, VISIBLE = "panel-body", "panel-filter", "panel-visible"
"""``type`` of a panel's collapsible body (class ``no-data`` hides the card), search box, and
the flag ``assets/lazy.js`` sets when it is the panel's turn to draw (the first screen first,
top-down, then the rest; panels draw on that)."""


def pid(kind: str, panel: str) -> dict:
    """The id of part ``kind`` of panel ``panel``."""
    return {"type": kind, "panel": panel}


def page(catalog, poll_interval_ms: int = settings.POLL_INTERVAL_MS, rows=None) -> html.Div:
    """The whole page for ``catalog``'s log directory (``rows``: the runs table's rows)."""
    return html.Div([
        dcc.Location(id="url", refresh=False),
        dcc.Store(id="view"),
        dcc.Store(id="heads"),
        dcc.Store(id="playing", data=False),
        dcc.Store(id="play-min-ms", data=settings.PLAY_INTERVAL_MS),
        dcc.Interval(id="tick", interval=poll_interval_ms, n_intervals=0),
        dcc.Interval(id="play-tick", interval=settings.PLAY_INTERVAL_MS, disabled=True),
        dcc.Store(id="scrolled"),
        dcc.Store(id="newest"),
        dcc.Store(id="names", data=catalog.names()),
        top_bar(catalog, rows.rows() if rows is not None else []),
        replay_bar(),
        panel_index(),
        html.Main([panel_card(p) for p in PANELS], className="panels"),
    ], className="page")


def top_bar(catalog, rows: list) -> html.Header:
    """Title, log directory, the runs table (folded; tick runs to compare them), live pause."""
    return html.Header([
        html.Div([html.Span("avionics", className="brand"),
                  html.Span(catalog.logdir, className="logdir", title="log directory")],
                 className="brand-box"),
        html.Details([html.Summary("Runs: pick, sort, filter, compare ▸", className="button",
                                   id="runs-summary"),
                      runs_table.table(rows)], className="runs-box", id="runs-box"),
        html.Button("Pause live", id="pause", n_clicks=0, className="button",
                    title="stop polling for new steps (the page keeps what it has)"),
    ], className="top-bar")


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
        layer_groups_ui.picker(),  # fills every layer search box with a group's pattern
    ], className="replay-bar")


def panel_index() -> html.Nav:
    """Links to every panel (a panel the runs did not record is hidden, its link too)."""
    return html.Nav([html.A(p.TITLE, href=f"#panel-{p.NAME}", className=f"index-{p.NAME}")
                     for p in PANELS], className="panel-index", id="panel-index")


def panel_card(panel) -> html.Section:
    """A panel's card: a collapsible body with its title, toggles, search box (panels that
    declare ``FILTER``), graph, extra content (tables, notes) and its state."""
    toggles = [{"label": label, "value": value} for value, label in panel.OPTIONS]
    loading = figures.placeholder("loading…")
    search = hook(panel, "FILTER")
    return html.Section(html.Details([
        html.Summary(html.H2(panel.TITLE), className="panel-summary",
                     title="click to fold or unfold this panel"),
        html.Div([dcc.Checklist(id=pid(OPTIONS, panel.NAME), options=toggles, value=[],
                                inline=True, className="panel-options"),
                  dcc.Input(id=pid(FILTER, panel.NAME), type="text", value="", debounce=True,
                            placeholder=search or "", className="panel-filter",
                            style=None if search else {"display": "none"})],
                 className="panel-head"),
        dcc.Graph(id=pid(GRAPH, panel.NAME), figure=loading, responsive=True,
                  config={"displaylogo": False, "displayModeBar": "hover"},
                  style=graph_style(panel, loading)),
        html.Div(id=pid(EXTRA, panel.NAME), className="panel-extra"),
        dcc.Store(id=pid(STATE, panel.NAME)),
        dcc.Store(id=pid(VISIBLE, panel.NAME), data=False),
    ], open=True, id=pid(BODY, panel.NAME), className="panel-body"),
        className=f"panel panel-{panel.NAME}", id=f"panel-{panel.NAME}")


def graph_style(panel, figure) -> dict | None:
    """The style of ``panel``'s graph box for ``figure``: its height in pixels, or hidden.

    The graph is fully responsive (it follows the window's width), so plotly fills its box; the
    box, not the figure, must therefore carry the height. Left to ``height: 100%`` of a card
    whose height is automatic, the box collapses to zero and the figure spills over the cards
    below it. ``None`` (no change) when ``figure`` is not a whole figure (a ``Patch``, or no
    update), since a patch never changes a figure's height.
    """
    if not hook(panel, "GRAPH"):
        return {"display": "none"}
    height = figure.get("layout", {}).get("height") if isinstance(figure, dict) else None
    return {"height": f"{height}px"} if height else None
