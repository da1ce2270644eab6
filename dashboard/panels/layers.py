"""Other series: any layer series a run recorded that no dedicated panel draws (weight and
update norms, activation min/max, a new instrument's quantity), each as a layer x step heatmap
with bars at the selected step; and above them, as lines, any built-in scalar no other panel
draws (momentum and Adam's betas per param group, the total weight norm, a new instrument's
total).

Adding a quantity to avionics therefore needs no dashboard change: it shows up here until it
earns a panel of its own. avionics' diagnosis facts (``grad_stale``, ``train_mode``,
...) are not shown. The search box (a regular expression over the keys) picks which series
are drawn; without one, the first ``MAX_GENERIC_KEYS`` are.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, HEATMAP, LINE, Need, View, is_diagnosis_fact, select
from dashboard.panels.traces import heatmap_rows, scalar_lines
from instrument.store import schema

NAME = "layers"
TITLE = "Other series"
REQUIRES = ("<any layer series no other panel draws>", "<any built-in scalar no other panel draws>")
MISSING = ("Every per-layer series this run recorded has its own panel above (or none was "
           "recorded).")
OPTIONS = ()
FILTER = "filter series (regex)"
"""Placeholder of the panel's search box: it picks the series drawn."""


def owned() -> list:
    """The key patterns the other panels draw."""
    from dashboard.panels import PANELS  # the panel list includes this module

    return [p for panel in PANELS if panel.__name__ != __name__ for p in panel.REQUIRES]


def free_keys(keys: list, taken: list, *, scalar: bool) -> list:
    """The keys no other panel draws: layer series, or built-in scalars (never the user's
    metrics, which the scalars panel draws, nor diagnosis facts)."""
    return sorted(k for k in keys if not is_diagnosis_fact(k)
                  and (not scalar or schema.is_reserved_scalar(k))
                  and not any(fnmatch.fnmatchcase(k, p) for p in taken))


def needs(keys: dict, options) -> list:
    """Every built-in scalar no other panel draws as a line; every such layer series as
    heatmap and bars."""
    taken = owned()
    scalars = free_keys(keys.get(schema.SCALAR, ()), taken, scalar=True)
    layers = free_keys(keys.get(schema.LAYER, ()), taken, scalar=False)
    return ([Need(k, schema.SCALAR, LINE) for k in scalars]
            + [Need(k, schema.LAYER, draw) for k in layers for draw in (HEATMAP, BARS)])


def figure(runs: list, view: View) -> dict:
    """A row of built-in scalar lines (runs overlaid, one colour per key), then one heatmap row
    per layer series (per run: heatmap and bars)."""
    keys = sorted({k for item in runs for k in list(item.series) + list(item.bars)})
    if not keys:
        return figures.placeholder(MISSING)
    matching = select(keys, view.filter)
    if not matching:
        return figures.placeholder(f"No series matches {view.filter!r} (of: "
                                   f"{', '.join(keys)}).")
    scalars = [k for k in matching if _is_scalar(runs, k)]
    shown = [k for k in matching if k not in scalars][:settings.MAX_GENERIC_KEYS]
    present = [item for item in runs if any(k in item.series or k in item.bars
                                            for k in shown)]
    rows = [(settings.SMALL_ROW_HEIGHT_PX, [1])] if scalars else []
    for key in shown:
        n = max(len(item.layers(key)) for item in present)
        rows.append((figures.heatmap_height(n), list(settings.HEATMAP_BAR_WIDTHS)
                     * len(present)))
    grid = Grid(rows)
    data, shapes, notes = [], [], []
    if scalars:
        data, shapes, notes = _scalar_row(grid, runs, scalars, view)
    for row, key in enumerate(shown, start=1 if scalars else 0):
        d, s, a = heatmap_rows(grid, present, key, row, view, label=key, log=positive(
            present, key), colourscale=settings.LOG_COLOURSCALE, bar_colour=settings.BAR_COLOUR)
        data, shapes, notes = data + d, shapes + s, notes + a
    shown = scalars + shown
    more = [k for k in matching if k not in shown]
    if more:
        notes.append({"text": f"also recorded: {', '.join(more)} (type in the filter)",
                      "showarrow": False, "xref": "paper", "yref": "paper", "x": 0, "y": 0,
                      "xanchor": "left", "yanchor": "top", "font": {"color": "#666"}})
    return figures.figure(data, figures.base_layout(grid, shapes=shapes, annotations=notes,
                                                    showlegend=bool(scalars), meta={"keys": shown}))


def _is_scalar(runs: list, key: str) -> bool:
    return any(key in item.series and not item.series[key].layers for item in runs) and \
        not any(key in item.bars for item in runs)


def _scalar_row(grid, runs: list, keys: list, view: View) -> tuple:
    """Every free built-in scalar as a line in one plot (runs overlaid, dashed after the first
    run), with the replay cursor."""
    cell = grid.cells[0][0]
    data = []
    for i, key in enumerate(keys):
        colour = settings.LAYER_COLOURS[i % len(settings.LAYER_COLOURS)]
        for r, item in enumerate(runs):
            for trace in scalar_lines(cell, item, key, name=key if r == 0 else
                                      f"{key} ({item.label})", colour=colour):
                if r:
                    trace["line"] = {**trace.get("line", {}), "dash": "dot"}
                data.append(trace)
    note = figures.title(grid, cell, "built-in scalars no other panel draws")
    return data, [figures.cursor(cell, view.step)], [note]


def positive(runs: list, key: str) -> bool:
    """Log colours when every finite value is positive and they span over two decades."""
    parts = [np.ravel(item.series[key].mean) for item in runs if key in item.series]
    values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[np.isfinite(values)]
    return bool(values.size and (values > 0).all()
                and np.log10(values.max() / values.min()) > 2)
