"""The layer-group picker: one control in the replay bar that fills every layer search box.

Its choices are the groups of :mod:`dashboard.layer_groups` for the runs being looked at
(numbered blocks such as ``h.1``, module types such as ``LayerNorm``). Picking one writes the
group's exact pattern into the search box of every per-layer panel (``LAYER_FILTER``), so each
of them reads and draws just that group's layers, and the pattern stays visible and editable
there. Clearing the picker clears those boxes.
"""

from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from dashboard import layer_groups
from dashboard.panels import BY_NAME
from dashboard.panels.base import READ_ERRORS, hook
from instrument.store import schema

PICKER = "layer-group"
"""Id of the dropdown."""
SEEN = "layer-group-seen"
"""Id of the store holding what the choices were computed for (runs and their series count)."""
PATTERNS = "layer-group-patterns"
"""Id of the store mapping each choice to its search-box pattern. The dropdown's values are the
short labels: a module type's pattern lists every layer of that type (thousands of characters
for a transformer's Linear layers), and such option values made Chromium's tab crash."""
FILTER = "panel-filter"
"""``type`` of the panels' search boxes (see :mod:`dashboard.layout`)."""


def picker() -> html.Div:
    """The dropdown (empty until runs are selected) and the store of what it was built for."""
    return html.Div([
        dcc.Dropdown(id=PICKER, options=[], value=None, clearable=True, searchable=True,
                     placeholder="layer group: all layers",
                     style={"width": "260px"}, optionHeight=28),
        dcc.Store(id=SEEN),
        dcc.Store(id=PATTERNS),
    ], className="layer-group", title="pick a block (numbered module) or a module type: "
                                      "every per-layer panel then shows just its layers")


def run_layers(run) -> tuple:
    """``(layer names of every layer series, meta)`` of an open run."""
    names: dict = {}  # ordered, without the quadratic list membership test
    for key in run.keys(schema.LAYER):
        names.update(dict.fromkeys(run.layer_names(key)))
    return list(names), run.meta


def choices(catalog, runs: list) -> tuple:
    """``(dropdown options, {option value: pattern})`` for ``runs`` (unreadable runs add
    nothing). An option's value is its label; the pattern it picks is looked up on a pick."""
    found = []
    for name in runs:
        with catalog.reading(name) as (run, error):
            if run is None or error:
                continue
            try:
                found.append(run_layers(run))
            except READ_ERRORS:
                continue
    groups = layer_groups.groups(found)
    return ([{"label": g["label"], "value": g["label"]} for g in groups],
            {g["label"]: g["value"] for g in groups})


def fills(outputs: list, value) -> list:
    """The new text of each search box in ``outputs``: the group's pattern for panels whose box
    picks layers, unchanged for the others."""
    out = []
    for spec in outputs:
        panel = BY_NAME.get(spec["id"]["panel"])
        out.append(value or "" if panel is not None and hook(panel, "LAYER_FILTER")
                   else no_update)
    return out


def register(app, catalog) -> None:
    """The picker's two callbacks: its choices follow the selected runs (and their new
    series); a pick fills the layer search boxes."""

    @app.callback(Output(PICKER, "options"), Output(SEEN, "data"), Output(PATTERNS, "data"),
                  Input("view", "data"), Input("heads", "data"), State(SEEN, "data"))
    def update_choices(view, heads, seen):
        runs = list((view or {}).get("runs") or [])
        key = [[r, ((heads or {}).get(r) or {}).get("series")] for r in runs]
        if key == seen:
            raise PreventUpdate  # a step move or a poll without new series
        options, patterns = choices(catalog, runs)
        return options, key, patterns

    @app.callback(Output({"type": FILTER, "panel": ALL}, "value"), Input(PICKER, "value"),
                  State(PATTERNS, "data"), prevent_initial_call=True)
    def pick(value, patterns):
        return fills(ctx.outputs_list, (patterns or {}).get(value) if value else None)

    app._avionics_layer_groups = update_choices, pick
