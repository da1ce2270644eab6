"""What the Cockpit panels share: a grid of small plots of scalar series with the replay cursor
and per-parameter bars at the replay step (built from the framework's traces)."""

from __future__ import annotations

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, LINE, Need, View
from dashboard.panels.traces import layer_bars, scalar_lines
from instrument.store import schema

EMA = "ema"
LOG_Y = "logy"


def any_data(runs: list, keys) -> bool:
    """True if some run has one of ``keys`` as a series or as bars."""
    return any(k in r.series or k in r.bars for r in runs for k in keys)


def lines_and_bars_needs(totals, per_layer=()) -> list:
    """Scalar totals drawn as lines, per-parameter series as bars at the step."""
    return ([Need(k, schema.SCALAR, LINE) for k in totals]
            + [Need(k, schema.LAYER, BARS) for k in per_layer])


def lines_and_bars(runs: list, view: View, totals, per_layer=(), *, logy=False,
                   smooth=False, zero_line=None, under=None,
                   reference: tuple | None = None) -> dict:
    """Row 1: one plot per ``(key, title)`` in ``totals`` (runs overlaid, cursor at the step);
    row 2 (if ``per_layer``): per run, bars per parameter of each ``(key, title)`` at the step.
    ``zero_line``: index of the plot that gets a dashed line at 0; ``under(cells)``: extra
    traces drawn under the lines of row 1 (given its cells); ``reference``: ``(value, label)``
    of a threshold drawn as a dashed line across every plot of row 1 (and named in its title)."""
    bar_runs = [r for r in runs if any(k in r.bars for k, _ in per_layer)]
    rows = [(settings.SMALL_ROW_HEIGHT_PX, [1] * len(totals))]
    if bar_runs:
        rows.append((settings.ROW_HEIGHT_PX, [1] * (len(per_layer) * len(bar_runs))))
    grid = Grid(rows)
    data, shapes, notes = list(under(grid.cells[0]) if under else []), [], []
    for c, (key, title) in enumerate(totals):
        cell = grid.cells[0][c]
        label = f"{title}  ·  {reference[1]}" if reference else title
        notes.append(figures.title(grid, cell, label))
        shapes.append(figures.cursor(cell, view.step))
        if reference:
            shapes.append(figures.hline(cell, reference[0], settings.THRESHOLD_COLOUR))
        if logy:
            figures.log_axis(grid.axis(cell, "y"))
        if zero_line == c:
            shapes.append(figures.hline(cell, 0.0, "#c00"))
        for item in runs:
            data += scalar_lines(cell, item, key, name=item.label, colour=item.colour,
                                 smooth=smooth, legend=c == 0 and len(runs) > 1)
    for i, item in enumerate(bar_runs):
        for j, (key, title) in enumerate(per_layer):
            cell = grid.cells[1][i * len(per_layer) + j]
            prefix = f"{item.label}: " if len(bar_runs) > 1 else ""
            notes.append(figures.title(grid, cell, f"{prefix}{title} per parameter"))
            grid.axis(cell, "y").update({"type": "category", "autorange": "reversed"})
            bar = layer_bars(cell, item, key, view, item.colour, title)
            if bar is not None:
                data.append(bar)
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes,
                                 showlegend=len(runs) > 1)
    return figures.figure(data, layout)
