"""Activation statistics per layer (leaf module output): mean, std, the dead-unit fraction and
the saturation fraction, each as a layer x step heatmap with bars at the selected step.

A statistic no layer recorded (the saturation fraction exists only for bounded activations such
as tanh or sigmoid) is left out and named in the panel's note. Runs sit side by side.
"""

from __future__ import annotations

import numpy as np

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, HEATMAP, Need, View
from dashboard.panels.traces import heatmap_rows
from instrument.store import schema

Keys = schema.Keys
NAME = "activations"
TITLE = "Activation statistics"
REQUIRES = (Keys.ACT_MEAN, Keys.ACT_STD, Keys.ACT_DEAD_FRAC, Keys.ACT_SATURATION_FRAC)
MISSING = ("No activation statistics were recorded: the 'activations' instrument was switched "
           "off in schedules=, or its schedule has not fired yet (default: every 10 steps).")
OPTIONS = ()
INSTRUMENTS = ("activations",)
"""The instruments that record its series: when they were on and the run went NaN/Inf, the
panel says so instead of asking to switch them on."""
FILTER = "search layers (regex)"
LAYER_FILTER = True
"""The search box picks the layers drawn (names matching a regular expression)."""

# key -> (label, log colours, colour scale, fixed range, midpoint)
STATS = {
    Keys.ACT_MEAN: ("mean", False, settings.DIVERGING_COLOURSCALE, None, 0.0),
    Keys.ACT_STD: ("std", True, settings.LOG_COLOURSCALE, None, None),
    Keys.ACT_DEAD_FRAC: ("dead-unit fraction", False, settings.FRACTION_COLOURSCALE,
                         settings.DEAD_FRACTION_RANGE, None),
    Keys.ACT_SATURATION_FRAC: ("saturation fraction", False, settings.FRACTION_COLOURSCALE,
                               settings.DEAD_FRACTION_RANGE, None),
}


def needs(keys: dict, options) -> list:
    """Each statistic as heatmap and bars."""
    return [Need(k, schema.LAYER, draw) for k in STATS for draw in (HEATMAP, BARS)]


def recorded(runs: list) -> list:
    """The statistics some run holds a finite value of, in display order."""
    out = []
    for key in STATS:
        for item in runs:
            ds = item.series.get(key)
            bar = item.bars.get(key)
            if (ds is not None and np.isfinite(ds.mean).any()) or (
                    bar is not None and np.isfinite(bar[2]).any()):
                out.append(key)
                break
    return out


def figure(runs: list, view: View) -> dict:
    """One row per recorded statistic; per run a heatmap and bars."""
    keys = recorded(runs)
    shown = [item for item in runs if any(k in item.series or k in item.bars for k in keys)]
    if not keys or not shown:
        return figures.placeholder(MISSING)
    rows = []
    for key in keys:
        n = max(len(item.layers(key)) for item in shown)
        rows.append((figures.heatmap_height(n), list(settings.HEATMAP_BAR_WIDTHS) * len(shown)))
    grid = Grid(rows)
    data, shapes, notes = [], [], []
    for row, key in enumerate(keys):
        label, log, scale, zrange, zmid = STATS[key]
        d, s, a = heatmap_rows(grid, shown, key, row, view, label=label, log=log,
                               colourscale=scale, bar_colour=settings.BAR_COLOUR,
                               zrange=zrange, zmid=zmid)
        data, shapes, notes = data + d, shapes + s, notes + a
    skipped = [STATS[k][0] for k in STATS if k not in keys]
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes, showlegend=False,
                                 meta={"not_recorded": skipped})
    return figures.figure(data, layout)
