"""Loss and user scalars (everything passed to ``monitor.log()``) as small multiples.

Compared runs overlay in each plot, one colour per run. A downsampled line shows the bucket
mean with a shaded min..max band, so a one-step spike stays visible at any zoom.
"""

from __future__ import annotations

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import LINE, Need, View, user_scalars
from dashboard.panels.traces import scalar_lines
from instrument.store import schema

NAME = "scalars"
TITLE = "Loss and scalars"
REQUIRES = (schema.Keys.LOSS, "<any key passed to monitor.log()>")
MISSING = ("No loss or other scalar was logged yet. Call monitor.log(loss=loss) in the training "
           "loop (any keyword becomes a scalar here).")
EMA, LOG_Y = "ema", "logy"
OPTIONS = ((EMA, "EMA smoothing"), (LOG_Y, "log y"))
ALWAYS_SHOWN = True
"""Shown even when the runs recorded nothing it draws (it says how to record it)."""


def needs(keys: dict, options) -> list:
    """The loss and user scalars, at most ``MAX_SCALAR_SUBPLOTS``."""
    own = user_scalars(keys[schema.SCALAR])[:settings.MAX_SCALAR_SUBPLOTS]
    return [Need(k, schema.SCALAR, LINE) for k in own]


def figure(runs: list, view: View) -> dict:
    """One plot per scalar key (loss first and full width), every run overlaid."""
    keys = []
    for item in runs:
        for key in item.series:
            if key not in keys:
                keys.append(key)
    keys = sorted(keys, key=lambda k: (k != schema.Keys.LOSS, k))
    if not keys:
        return figures.placeholder(MISSING)
    rest = keys[1:]
    rows = [(settings.ROW_HEIGHT_PX, [1])]
    small = settings.SMALL_ROW_HEIGHT_PX
    rows += [(small, [1, 1])] * (len(rest) // 2) + [(small, [1])] * (len(rest) % 2)
    grid = Grid(rows)
    cells = [c for row in grid.cells for c in row]
    data, shapes, notes = [], [], []
    smooth, logy = EMA in view.options, LOG_Y in view.options
    for key, cell in zip(keys, cells):
        shapes.append(figures.cursor(cell, view.step))
        notes.append(figures.title(grid, cell, key + _bucket_note(runs, key)))
        if logy:
            grid.axis(cell, "y")["type"] = "log"
        grid.axis(cell, "x")["title"] = {"text": "step", "standoff": 2}
        for item in runs:
            data += scalar_lines(cell, item, key, name=item.label, colour=item.colour,
                                 smooth=smooth, legend=key == keys[0] and len(runs) > 1)
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes,
                                 showlegend=len(runs) > 1)
    return figures.figure(data, layout)


def _bucket_note(runs: list, key: str) -> str:
    sizes = {item.bucket(key) for item in runs if key in item.series}
    size = max(sizes, default=1)
    return "" if size == 1 else f"  ·  1 point = {size} steps (band: min..max)"
