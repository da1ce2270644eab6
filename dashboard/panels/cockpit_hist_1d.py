"""Histogram of the individual gradient elements at the replay step (Cockpit shows the last
tracked step only): all parameters, or the highlighted parameter's own. Bins run bottom to
top; the edge bins include the values outside the range."""

from __future__ import annotations

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, Need, View
from dashboard.panels.traces import layer_bars
from instrument.store import schema
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_hist_1d"
TITLE = "Individual gradients: histogram at the step"
REQUIRES = (CK.GRAD_HIST_1D,)
MISSING = ("No gradient histogram was recorded: watch(..., loss_fn=criterion, "
           "preset='economy') or schedules={'grad_hist_1d': N}.")
OPTIONS = (("logx", "log counts"),)


def needs(keys: dict, options) -> list:
    own = [k for k in keys.get(schema.LAYER, ()) if k.startswith(CK.GRAD_HIST_1D + "/")]
    return [Need(k, schema.LAYER, BARS) for k in [CK.GRAD_HIST_1D] + own]


def key_for(view: View, runs: list) -> str:
    """The highlighted parameter's histogram if it was recorded, else all parameters'."""
    if view.layer and any(CK.hist_1d_of(view.layer) in r.bars for r in runs):
        return CK.hist_1d_of(view.layer)
    return CK.GRAD_HIST_1D


def figure(runs: list, view: View) -> dict:
    key = key_for(view, runs)
    items = [r for r in runs if key in r.bars]
    if not items:
        return figures.placeholder(MISSING)
    grid = Grid([(settings.ROW_HEIGHT_PX + 60, [1] * len(items))])
    what = "all parameters" if key == CK.GRAD_HIST_1D else view.layer
    data, notes = [], []
    for item, cell in zip(items, grid.cells[0]):
        prefix = f"{item.label}: " if len(items) > 1 else ""
        notes.append(figures.title(grid, cell, f"{prefix}{what} (bin = left edge)"))
        grid.axis(cell, "y")["type"] = "category"
        if "logx" in view.options:
            figures.log_axis(grid.axis(cell, "x"))
        # horizontal bars, bins as categories: the framework moves them with the replay step
        bar = layer_bars(cell, item, key, view, item.colour, "count")
        if bar is not None:
            data.append(bar)
    layout = figures.base_layout(grid, annotations=notes, showlegend=False, bargap=0)
    return figures.figure(data, layout)
