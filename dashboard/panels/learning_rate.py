"""Learning rate per optimizer param group, and the measured effective learning rate per layer
(``||update|| / ||gradient||``, which shows what an adaptive optimizer really does per layer).

Param-group lines of compared runs overlay; per-layer lines are drawn side by side, one plot
per run.
"""

from __future__ import annotations

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import LINE, LINES, Need, View
from dashboard.panels.traces import layer_colours, layer_lines, scalar_lines
from instrument.store import schema

Keys = schema.Keys
NAME = "learning_rate"
TITLE = "Learning rate"
REQUIRES = (f"{Keys.LR}/*", Keys.EFFECTIVE_LR)
MISSING = ("No learning rate was recorded: the run has no torch optimizer passed to "
           "instrument.watch(model, optimizer), or the 'hyperparams' and 'update' instruments "
           "were switched off in schedules=.")
LOG_Y = "logy"
OPTIONS = ((LOG_Y, "log y (param groups)"),)
INSTRUMENTS = ("hyperparams", "update")
"""The instruments that record its series: when they were on and the run went NaN/Inf, the
panel says so instead of asking to switch them on."""
FILTER = "search layers (regex)"
LAYER_FILTER = True
"""The search box picks the layers drawn (names matching a regular expression)."""


def needs(keys: dict, options) -> list:
    """``lr/<group>`` scalars and the per-layer effective learning rate."""
    groups = [k for k in keys[schema.SCALAR] if k.startswith(f"{Keys.LR}/")]
    return ([Need(k, schema.SCALAR, LINE) for k in groups]
            + [Need(Keys.EFFECTIVE_LR, schema.LAYER, LINES)])


def figure(runs: list, view: View) -> dict:
    """Row 1: lr per param group (runs overlaid). Row 2: effective LR per layer, per run."""
    groups = sorted({k for item in runs for k in item.series if k.startswith(f"{Keys.LR}/")})
    per_layer = [item for item in runs if Keys.EFFECTIVE_LR in item.series]
    if not groups and not per_layer:
        return figures.placeholder(MISSING)
    rows = ([(settings.SMALL_ROW_HEIGHT_PX, [1])] if groups else [])
    rows += [(settings.ROW_HEIGHT_PX, [1] * len(per_layer))] if per_layer else []
    grid = Grid(rows)
    data, shapes, notes = [], [], []
    if groups:
        cell = grid.cells[0][0]
        shapes.append(figures.cursor(cell, view.step))
        notes.append(figures.title(grid, cell, "learning rate per param group"))
        if LOG_Y in view.options:
            grid.axis(cell, "y")["type"] = "log"
        for item in runs:
            for key in groups:
                name = f"{item.label} {key}" if len(runs) > 1 else key
                data += scalar_lines(cell, item, key, name=name, colour=item.colour)
    if per_layer:
        for item, cell in zip(per_layer, grid.cells[-1]):
            shapes.append(figures.cursor(cell, view.step))
            label = "effective LR per layer (|update| / |grad|)"
            notes.append(figures.title(grid, cell, f"{item.label}: {label}"
                                       if len(runs) > 1 else label))
            grid.axis(cell, "y")["type"] = "log"
            grid.axis(cell, "x")["title"] = {"text": "step", "standoff": 2}
            n = len(item.series[Keys.EFFECTIVE_LR].layers)
            data += layer_lines(cell, item, Keys.EFFECTIVE_LR, colours=layer_colours(n),
                                legend=item is per_layer[0])
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes)
    return figures.figure(data, layout)
