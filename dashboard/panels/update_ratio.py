"""Update/weight ratio ``||dw|| / ||w||`` per layer over steps, against the 1e-3 rule of thumb.

The shaded band is :data:`dashboard.settings.UPDATE_RATIO_BAND` around
:data:`~dashboard.settings.UPDATE_RATIO_REFERENCE`. Lines far below it learn slowly, lines far
above it are at risk of instability. Runs are drawn side by side, each with bars at the selected
step.
"""

from __future__ import annotations

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, LINE, LINES, Need, View
from dashboard.panels.traces import layer_bars, layer_colours, layer_lines, scalar_lines
from instrument.store import schema

Keys = schema.Keys
NAME = "update_ratio"
TITLE = "Update / weight ratio"
REQUIRES = (Keys.UPDATE_RATIO, Keys.UPDATE_RATIO_TOTAL)
MISSING = ("No update/weight ratios were recorded: the 'update' and 'weight_norm' instruments "
           "must both run (schedules=), and an optimizer step must have been logged.")
OPTIONS = ()
INSTRUMENTS = ("update", "weight_norm")
"""The instruments that record its series: when they were on and the run went NaN/Inf, the
panel says so instead of asking to switch them on."""
FILTER = "search layers (regex)"
LAYER_FILTER = True
"""The search box picks the layers drawn (names matching a regular expression)."""


def needs(keys: dict, options) -> list:
    """Per-layer ratios as lines and bars, and the whole-model ratio."""
    return [Need(Keys.UPDATE_RATIO, schema.LAYER, LINES),
            Need(Keys.UPDATE_RATIO, schema.LAYER, BARS),
            Need(Keys.UPDATE_RATIO_TOTAL, schema.SCALAR, LINE)]


def figure(runs: list, view: View) -> dict:
    """Per run: ratio lines per layer (log y) with the reference band, bars at the step."""
    shown = [item for item in runs if Keys.UPDATE_RATIO in item.series
             or Keys.UPDATE_RATIO_TOTAL in item.series]
    if not shown:
        return figures.placeholder(MISSING)
    n = max((len(item.layers(Keys.UPDATE_RATIO)) for item in shown), default=1)
    height = max(settings.ROW_HEIGHT_PX, figures.heatmap_height(n))
    grid = Grid([(height, list(settings.HEATMAP_BAR_WIDTHS) * len(shown))])
    lo, hi = settings.UPDATE_RATIO_BAND
    data, shapes, notes = [], [], []
    for i, item in enumerate(shown):
        cell, bar_cell = grid.cells[0][2 * i], grid.cells[0][2 * i + 1]
        shapes.append(figures.cursor(cell, view.step))
        shapes += [figures.hband(cell, lo, hi),
                   figures.hline(cell, settings.UPDATE_RATIO_REFERENCE, settings.REFERENCE_COLOUR)]
        prefix = f"{item.label}: " if len(runs) > 1 else ""
        notes.append(figures.title(grid, cell, f"{prefix}update / weight per layer "
                                   f"(band: {lo:.1e}..{hi:.1e})"))
        notes.append(figures.title(grid, bar_cell, "at the selected step"))
        grid.axis(cell, "y")["type"] = "log"
        grid.axis(cell, "x")["title"] = {"text": "step", "standoff": 2}
        colours = layer_colours(len(item.layers(Keys.UPDATE_RATIO)))
        # a comparison's legend would mix runs and layers: layers are named on hover only
        alone = len(shown) == 1
        data += layer_lines(cell, item, Keys.UPDATE_RATIO, colours=colours, legend=alone)
        data += scalar_lines(cell, item, Keys.UPDATE_RATIO_TOTAL, name="whole model",
                             colour=settings.REFERENCE_COLOUR, legend=alone)
        figures.log_axis(grid.axis(bar_cell, "x"))
        grid.axis(bar_cell, "y").update({"autorange": "reversed", "type": "category"})
        shapes.append({**figures.hband(bar_cell, lo, hi), "xref": bar_cell.xref,
                       "yref": f"{bar_cell.yref} domain", "x0": lo, "x1": hi, "y0": 0, "y1": 1})
        bar = layer_bars(bar_cell, item, Keys.UPDATE_RATIO, view, settings.BAR_COLOUR,
                         "update/weight")
        if bar is not None:
            data.append(bar)
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes)
    return figures.figure(data, layout)
