"""Every callback of the app, registered on the app object by :func:`register` (no module-level
``@dash.callback``, so any number of apps can live in one process, e.g. in tests).

* ``poll``: every tick, the heads (last step, newest event, status) of the selected runs and
  the run list; guarded with ``running=`` so a slow poll is never overlapped by the next tick.
* ``pause``: the live pause toggle (sets the interval's ``max_intervals``: the guard owns
  ``disabled``).
* ``navigate``: the view (runs, step, layer) from the URL, run picker, step slider and event
  rows, mirrored back into all of them.
* ``play`` / ``advance`` / ``play_state``: replay, in the browser (``assets/replay.js``).
* ``update_panel``: one pattern-matching callback refreshes any panel (see
  :mod:`dashboard.refresh`).
"""

from __future__ import annotations

from dash import ALL, MATCH, ClientsideFunction, Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from dashboard import layer_groups_ui, navigation, refresh, runs_table
from dashboard.layout import (
    BODY,
    EXTRA,
    FILTER,
    GRAPH,
    OPTIONS,
    STATE,
    VISIBLE,
    graph_style,
    pid,
)
from dashboard.panels import BY_NAME, events
from dashboard.panels.base import READ_ERRORS, View


def register(app, catalog, rows=None) -> None:
    """Register every callback of the dashboard on ``app`` for runs of ``catalog`` (``rows``:
    the runs table's :class:`~dashboard.runs_table.RunRows`)."""
    _live(app, catalog, rows or runs_table.RunRows(catalog))
    _navigation(app, catalog)
    _replay(app)
    _panels(app, catalog)
    layer_groups_ui.register(app, catalog)


def _live(app, catalog, rows) -> None:
    @app.callback(Output("heads", "data"), Output("run-select", "data"),
                  Output("run-select", "selected_rows"),
                  Output("names", "data"), Output("newest", "data"),
                  Input("tick", "n_intervals"), State("view", "data"), State("heads", "data"),
                  State("run-select", "data"), State("names", "data"),
                  running=[(Output("tick", "disabled"), True, False)])
    def poll(_n, view, heads, table, known):
        names = catalog.names()
        data = rows.rows(names)
        runs = (view or {}).get("runs") or []
        new = {r: catalog.head(r, (heads or {}).get(r)) for r in runs}
        appeared = sorted(set(names) - set(known or []))
        newest = catalog.latest(appeared) if appeared else None
        fresh = data != table
        return ((new if new != heads else no_update), (data if fresh else no_update),
                (runs_table.selected_rows(data, runs) if fresh else no_update),
                (names if names != known else no_update), newest or no_update)

    @app.callback(Output("tick", "max_intervals"), Output("pause", "children"),
                  Output("pause", "className"), Input("pause", "n_clicks"),
                  prevent_initial_call=True)
    def pause(n_clicks):
        paused = bool(n_clicks % 2)
        return ((0, "Resume live", "button paused") if paused
                else (-1, "Pause live", "button"))

    app._avionics_poll, app._avionics_pause = poll, pause  # plain functions, for tests


def _navigation(app, catalog) -> None:
    @app.callback(
        Output("view", "data"), Output("run-select", "selected_row_ids"),
        Output("run-select", "selected_rows"), Output("step-slider", "min"),
        Output("step-slider", "max"), Output("step-slider", "value"),
        Output("step-slider", "marks"), Output("step-label", "children"),
        Output("url", "search"),
        Input("url", "search"), Input("run-select", "selected_row_ids"),
        Input("step-slider", "value"),
        Input({"type": events.ROW_TYPE, "index": ALL}, "n_clicks"), Input("heads", "data"),
        Input("playing", "data"), Input("newest", "data"),
        Input(pid(GRAPH, ALL), "clickData"), State("view", "data"),
        State("step-slider", "min"), State("step-slider", "max"),
        State("step-label", "children"))
    def navigate(search, selected, slider, _rows, heads, playing, newest, _clicks, old,
                 old_min, old_max, old_label):
        trigger = ctx.triggered_id
        if isinstance(trigger, dict) and not ctx.triggered[0]["value"]:
            return (no_update,) * 9  # rows re-rendered, not clicked
        view = navigation.next_view(old, trigger, search, selected, newest,
                                    _clicked(trigger, ctx.triggered[0]["value"]),
                                    catalog.latest)
        heads = {**{r: catalog.head(r) for r in view["runs"] if r not in (heads or {})},
                 **(heads or {})}
        first, last = navigation.step_range(heads, view["runs"])
        if trigger == "step-slider":
            view["step"] = navigation.slider_step(slider, first, last)
        value = last if view.get("step") is None else view["step"]
        valid = [r for r in view["runs"] if r in catalog.names()]
        query = navigation.build_query(view)
        text = navigation.label(view, first, last)
        span = (first, last) != (old_min, old_max)

        def changed(new, current):  # untouched outputs are not sent: a drag is not disturbed
            return new if new != current else no_update

        ticked = runs_table.selected_rows([{"id": n} for n in catalog.names()], valid)
        return (changed(view, old), changed(valid, selected),
                ticked if valid != selected else no_update, changed(first, old_min),
                changed(last, old_max), changed(value, slider),
                navigation.marks(first, last) if span else no_update, changed(text, old_label),
                query if (query != (search or "") and not playing) else no_update)

    app._avionics_navigate = navigate


def _replay(app) -> None:
    app.clientside_callback(
        ClientsideFunction("avionics", "toggle_play"),
        Output("playing", "data"), Output("step-slider", "value", allow_duplicate=True),
        Input("play", "n_clicks"), State("playing", "data"), State("step-slider", "value"),
        State("step-slider", "min"), State("step-slider", "max"), prevent_initial_call=True)
    app.clientside_callback(
        ClientsideFunction("avionics", "advance"),
        Output("step-slider", "value", allow_duplicate=True),
        Output("playing", "data", allow_duplicate=True),
        Input("play-tick", "n_intervals"), State("step-slider", "value"),
        State("step-slider", "min"), State("step-slider", "max"), State("speed", "value"),
        State("play-tick", "interval"), State("playing", "data"), prevent_initial_call=True)
    app.clientside_callback(
        ClientsideFunction("avionics", "play_interval"),
        Output("play-tick", "interval"), Input("speed", "value"), State("play-min-ms", "data"))
    app.clientside_callback(
        ClientsideFunction("avionics", "scroll_to_finding"),
        Output("scrolled", "data"), Input({"type": events.ROW_TYPE, "index": ALL}, "n_clicks"),
        prevent_initial_call=True)
    app.clientside_callback(
        ClientsideFunction("avionics", "play_state"),
        Output("play-tick", "disabled"), Output("play", "children"), Input("playing", "data"))


def _panels(app, catalog) -> None:
    @app.callback(Output(pid(GRAPH, MATCH), "figure"), Output(pid(EXTRA, MATCH), "children"),
                  Output(pid(STATE, MATCH), "data"), Output(pid(GRAPH, MATCH), "style"),
                  Output(pid(BODY, MATCH), "className"),
                  Input("view", "data"), Input("heads", "data"),
                  Input(pid(OPTIONS, MATCH), "value"), Input(pid(FILTER, MATCH), "value"),
                  Input(pid(VISIBLE, MATCH), "data"),
                  State(pid(STATE, MATCH), "data"), prevent_initial_call=True)
    def update_panel(view_data, heads, options, search, visible, state):
        if not visible:  # its turn not come yet (assets/lazy.js: first screen first, one at a time)
            raise PreventUpdate
        panel = BY_NAME[ctx.outputs_list[0]["id"]["panel"]]
        trigger = {_trigger_kind(p) for p in ctx.triggered_prop_ids}
        view = View.from_dict(view_data, options, search)
        try:
            out = refresh.refresh(panel, catalog, trigger, view, heads, state)
        except READ_ERRORS:  # the store changed under an append: draw it again from scratch
            out = refresh.render(panel, catalog, view, heads)
        style = graph_style(panel, out.figure)
        body = no_update if out.empty is None else (
            "panel-body no-data" if out.empty else "panel-body")
        return (out.figure, out.extra, out.state, no_update if style is None else style,
                body)

    app._avionics_update_panel = update_panel


def _clicked(trigger, value):
    """``(run, id, step, layer)`` of a clicked event row or *show* button; for a click on a
    heatmap cell, its layer (the row) at the current step: ``(None, None, KEEP, layer)``."""
    if not isinstance(trigger, dict):
        return None
    if trigger.get("type") == GRAPH:
        point = ((value or {}).get("points") or [{}])[0]
        if "z" in point and isinstance(point.get("y"), str):
            return None, None, navigation.KEEP, point["y"]
        return None
    return events.parse_row_id(trigger["index"])


def _trigger_kind(prop_id: str) -> str:
    if prop_id.startswith("view."):
        return "view"
    if prop_id.startswith("heads."):
        return "heads"
    if '"panel-visible"' in prop_id:
        return "view"  # first drawn: a render (there is no state yet)
    return "options"  # a toggle or the search box: a full render
