"""Other per-layer series: any layer series a run recorded that no dedicated panel draws (weight
and update norms, activation min/max, a new instrument's quantity), each as a layer x step
heatmap with bars at the selected step.

Adding a per-layer quantity to avionics therefore needs no dashboard change: it shows up here
until it earns a panel of its own. avionics' diagnosis facts (``grad_stale``, ``train_mode``,
...) are not shown. The search box (a regular expression over the keys) picks which series
are drawn; without one, the first ``MAX_GENERIC_KEYS`` are.
"""

from __future__ import annotations

import fnmatch

import numpy as np

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, HEATMAP, Need, View, is_diagnosis_fact, select
from dashboard.panels.traces import heatmap_rows
from instrument.store import schema

NAME = "layers"
TITLE = "Other per-layer series"
REQUIRES = ("<any layer series no other panel draws>",)
MISSING = ("Every per-layer series this run recorded has its own panel above (or none was "
           "recorded).")
OPTIONS = ()
FILTER = "filter series (regex)"
"""Placeholder of the panel's search box: it picks the series drawn."""


def owned() -> list:
    """The key patterns the other panels draw."""
    from dashboard.panels import PANELS  # the panel list includes this module

    return [p for panel in PANELS if panel.__name__ != __name__ for p in panel.REQUIRES]


def needs(keys: dict, options) -> list:
    """Every layer series no other panel draws, as heatmap and bars."""
    taken = owned()
    free = [k for k in keys[schema.LAYER] if not is_diagnosis_fact(k)
            and not any(fnmatch.fnmatchcase(k, p) for p in taken)]
    return [Need(k, schema.LAYER, draw) for k in sorted(free) for draw in (HEATMAP, BARS)]


def figure(runs: list, view: View) -> dict:
    """One heatmap row per series (per run: heatmap and bars)."""
    keys = sorted({k for item in runs for k in list(item.series) + list(item.bars)})
    if not keys:
        return figures.placeholder(MISSING)
    matching = select(keys, view.filter)
    if not matching:
        return figures.placeholder(f"No series matches {view.filter!r} (of: "
                                   f"{', '.join(keys)}).")
    shown = matching[:settings.MAX_GENERIC_KEYS]
    present = [item for item in runs if any(k in item.series or k in item.bars
                                            for k in shown)]
    rows = []
    for key in shown:
        n = max(len(item.layers(key)) for item in present)
        rows.append((figures.heatmap_height(n), list(settings.HEATMAP_BAR_WIDTHS)
                     * len(present)))
    grid = Grid(rows)
    data, shapes, notes = [], [], []
    for row, key in enumerate(shown):
        d, s, a = heatmap_rows(grid, present, key, row, view, label=key, log=positive(
            present, key), colourscale=settings.LOG_COLOURSCALE, bar_colour=settings.BAR_COLOUR)
        data, shapes, notes = data + d, shapes + s, notes + a
    more = [k for k in matching if k not in shown]
    if more:
        notes.append({"text": f"also recorded: {', '.join(more)} (type in the filter)",
                      "showarrow": False, "xref": "paper", "yref": "paper", "x": 0, "y": 0,
                      "xanchor": "left", "yanchor": "top", "font": {"color": "#666"}})
    return figures.figure(data, figures.base_layout(grid, shapes=shapes, annotations=notes,
                                                    showlegend=False, meta={"keys": shown}))


def positive(runs: list, key: str) -> bool:
    """Log colours when every finite value is positive and they span over two decades."""
    parts = [np.ravel(item.series[key].mean) for item in runs if key in item.series]
    values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[np.isfinite(values)]
    return bool(values.size and (values > 0).all()
                and np.log10(values.max() / values.min()) > 2)
