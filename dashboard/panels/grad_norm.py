"""Gradient norms: the global norm over steps (and, in loops that clip, the norm before
clipping, dashed), per layer as a layer x step heatmap with a log colour scale, and per layer
as bars at the selected step.

Compared runs overlay in the global plot and sit side by side in the per-layer row.
"""

from __future__ import annotations

from dashboard import figures, settings, walltime
from dashboard.figures import Grid
from dashboard.panels.base import BARS, HEATMAP, LINE, Need, View
from dashboard.panels.traces import heatmap_rows, scalar_lines
from instrument.store import schema

Keys = schema.Keys
NAME = "grad_norm"
TITLE = "Gradient norms"
REQUIRES = (Keys.GRAD_NORM_TOTAL, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, Keys.GRAD_NORM)
MISSING = ("No gradient norms were recorded: the 'grad_norm' instrument was switched off in "
           "schedules=, or no optimizer step has been logged yet.")
LOG_Y = "logy"
OPTIONS = ((LOG_Y, "log y (global)"), walltime.OPTION)
INSTRUMENTS = ("grad_norm",)
"""The instruments that record its series: when they were on and the run went NaN/Inf, the
panel says so instead of asking to switch them on."""
FILTER = "search layers (regex)"
LAYER_FILTER = True
"""The search box picks the layers drawn (names matching a regular expression)."""


def needs(keys: dict, options) -> list:
    """The global norm line (and the before-clip one where recorded), and the per-layer norms
    as heatmap and bars."""
    clipped = [Need(Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, schema.SCALAR, LINE)] \
        if Keys.GRAD_NORM_TOTAL_BEFORE_CLIP in keys.get(schema.SCALAR, ()) else []
    return [Need(Keys.GRAD_NORM_TOTAL, schema.SCALAR, LINE), *clipped,
            Need(Keys.GRAD_NORM, schema.LAYER, HEATMAP),
            Need(Keys.GRAD_NORM, schema.LAYER, BARS)]


def figure(runs: list, view: View) -> dict:
    """Row 1: global norm (runs overlaid). Row 2: per run, layer x step heatmap and bars."""
    total = [item for item in runs if Keys.GRAD_NORM_TOTAL in item.series]
    per_layer = [item for item in runs
                 if Keys.GRAD_NORM in item.series or Keys.GRAD_NORM in item.bars]
    if not total and not per_layer:
        return figures.placeholder(MISSING)
    rows = [(settings.SMALL_ROW_HEIGHT_PX, [1])] if total else []
    chosen = layer_across(per_layer, view)
    if chosen:
        rows.append((settings.SMALL_ROW_HEIGHT_PX, [1]))
    if per_layer:
        n = max(len(item.layers(Keys.GRAD_NORM)) for item in per_layer)
        rows.append((figures.heatmap_height(n),
                     list(settings.HEATMAP_BAR_WIDTHS) * len(per_layer)))
    grid = Grid(rows)
    data, shapes, notes, placed = [], [], [], []
    if total:
        cell = grid.cells[0][0]
        shapes += walltime.line_cursors(grid, cell, total, view, placed)
        clipping = any(Keys.GRAD_NORM_TOTAL_BEFORE_CLIP in item.series for item in total)
        notes.append(figures.title(grid, cell, "global gradient norm" + (
            " (dashed: before clipping)" if clipping else "")))
        if LOG_Y in view.options:
            grid.axis(cell, "y")["type"] = "log"
        for item in walltime.placeable(total, view):
            own = scalar_lines(cell, item, Keys.GRAD_NORM_TOTAL,
                               name=f"{item.label} (after clipping)" if clipping else item.label,
                               colour=item.colour, legend=len(runs) > 1 or clipping)
            data += walltime.convert(own + before_clip_lines(cell, item), item.clock)
    if chosen:
        cell = grid.cells[1 if total else 0][0]
        shapes += walltime.line_cursors(grid, cell, chosen, view, placed)
        notes.append(figures.title(grid, cell, f"grad norm of {view.layer}, runs overlaid"))
        grid.axis(cell, "y")["type"] = "log"
        data += chosen_lines(cell, walltime.placeable(chosen, view), view.layer)
    if per_layer:
        d, s, a = heatmap_rows(grid, per_layer, Keys.GRAD_NORM, len(grid.cells) - 1, view,
                               label="grad norm", log=True,
                               colourscale=settings.LOG_COLOURSCALE, bar_colour=settings.BAR_COLOUR)
        data, shapes, notes = data + d, shapes + s, notes + a
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes,
                                 showlegend=len(runs) > 1 or any(
                                     Keys.GRAD_NORM_TOTAL_BEFORE_CLIP in item.series
                                     for item in total))
    if walltime.on(view):
        walltime.mark(layout, placed, runs)
    return figures.figure(data, layout)


def layer_across(runs: list, view: View) -> list:
    """The compared runs that have the highlighted layer (none outside a comparison)."""
    if len(runs) < 2 or view.layer is None:
        return []
    return [item for item in runs if view.layer in item.layers(Keys.GRAD_NORM)
            and Keys.GRAD_NORM in item.series]


def chosen_lines(cell, runs: list, layer: str) -> list:
    """The grad norm of ``layer`` in each run, one line per run in the run's colour."""
    out = []
    for item in runs:
        ds = item.series[Keys.GRAD_NORM]
        j = list(ds.layers).index(layer)
        out += walltime.convert([figures.line(
            cell, ds.step, ds.mean[:, j], item.label, item.colour, group=f"{item.id}:chosen",
            showlegend=False, hover=f"{item.label} {layer} %{{y}} @ step %{{x}}<extra></extra>")],
            item.clock)
    return out


def before_clip_lines(cell, item) -> list:
    """The norm before clipping, dashed with markers: it is recorded only on the steps where
    clipping changed the gradient, so the gaps between them are steps clipping left alone."""
    name = f"{item.label} (before clipping)"
    out = scalar_lines(cell, item, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, name=name,
                       colour=item.colour, legend=True)
    for trace in out:
        if trace.get("name") == name:
            trace["line"] = {**trace.get("line", {}), "dash": "dash"}
            trace["mode"] = "lines+markers"
            trace["marker"] = {"size": 4, "color": item.colour}
    return out
