"""Cockpit's alpha gauge: the distribution of alpha over all tracked steps against the most
recent ones, drawn over the landscape alpha describes (-1: no progress, 0: onto the valley
floor, 1: to the opposite slope at the same height), and alpha per step."""

from __future__ import annotations

import numpy as np

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import LINES, Need, View
from dashboard.panels.traces import layer_lines
from instrument.store import schema
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_alpha"
TITLE = "Step size: alpha"
REQUIRES = (CK.ALPHA,)
MISSING = ("No alpha was recorded: watch(..., loss_fn=criterion, preset='economy') or "
           "schedules={'alpha': N}; it needs an optimizer.")
SYMLOG = "symlog"
OPTIONS = ((SYMLOG, "symlog y (alpha per step)"),)
RECENT = 0.1
"""The "recent" histogram holds the last 10 % of the values (Cockpit's gauge)."""
RANGE = (-3.0, 3.0)
"""Histogram range; values outside count in the edge bins."""
BINS = 30
LANDSCAPE_COLOUR = "#999"


def needs(keys: dict, options) -> list:
    return [Need(CK.ALPHA, schema.LAYER, LINES)]


def histogram(values: np.ndarray) -> tuple:
    """``(bin centers, densities)`` of ``values`` clipped into :data:`RANGE`."""
    edges = np.linspace(RANGE[0], RANGE[1], BINS + 1)
    counts, _ = np.histogram(np.clip(values, RANGE[0], RANGE[1]), edges)
    dens = counts / max(counts.sum(), 1) / (edges[1] - edges[0])
    return (edges[:-1] + edges[1:]) / 2, dens


def figure(runs: list, view: View) -> dict:
    items = [r for r in runs if CK.ALPHA in r.series]
    if not items:
        return figures.placeholder(MISSING)
    grid = Grid([(settings.ROW_HEIGHT_PX, [1, 2])])
    gauge, over = grid.cells[0]
    notes = [figures.title(grid, gauge, "alpha: all tracked steps vs the recent 10 %"),
             figures.title(grid, over, "alpha per step (stored under the step the update "
                                       "started)")]
    shapes = [figures.cursor(over, view.step)]
    data, top = [], 0.0
    for item in items:
        ds = item.series[CK.ALPHA]
        values = ds.mean[:, 0][np.isfinite(ds.mean[:, 0])]
        if values.size:
            recent = values[-max(1, int(np.ceil(RECENT * values.size))):]
            for part, label, opacity in ((values, "all", 0.35), (recent, "recent", 0.9)):
                centers, dens = histogram(part)
                top = max(top, float(dens.max()))
                data.append({"type": "bar", "x": centers.tolist(), "y": dens.tolist(),
                             "name": f"{item.label}: {label} ({part.size})",
                             "opacity": opacity, "marker": {"color": item.colour},
                             "xaxis": gauge.xref, "yaxis": gauge.yref, "meta": {"part": label}})
        lines = layer_lines(over, item, CK.ALPHA, colours=[item.colour], legend=False)
        if SYMLOG in view.options:
            lines = [symlog_trace(t) for t in lines]
        data += lines
    xs = np.linspace(-1.5, 1.5, 61)
    data.append({"type": "scatter", "mode": "lines", "x": xs.tolist(),
                 "y": (top * xs ** 2).tolist(), "name": "landscape", "hoverinfo": "skip",
                 "line": {"color": LANDSCAPE_COLOUR, "dash": "dash"}, "xaxis": gauge.xref,
                 "yaxis": gauge.yref, "meta": {"part": "landscape"}})
    grid.axis(gauge, "x")["range"] = list(RANGE)
    if SYMLOG in view.options:
        vals, text = symlog_ticks(data, over)
        grid.axis(over, "y").update(tickvals=vals, ticktext=text)
    for a in (-1.0, 0.0, 1.0):
        shapes.append({"type": "line", "xref": gauge.xref, "yref": f"{gauge.yref} domain",
                       "x0": a, "x1": a, "y0": 0, "y1": 1, "name": "reference",
                       "line": {"color": "#bbb", "width": 1}})
    layout = figures.base_layout(grid, shapes=shapes, annotations=notes, barmode="overlay")
    return figures.figure(data, layout)


def symlog(y) -> np.ndarray:
    """``sign(y) * log10(1 + |y|)``: linear near 0, logarithmic far from it, both signs (alpha
    is signed and can reach 1e3 on a bad step)."""
    y = np.asarray(y, dtype=float)
    return np.sign(y) * np.log10(1.0 + np.abs(y))


def symlog_trace(trace: dict) -> dict:
    """A line with symlog y, drawn whole (no live appends: those would send raw values)."""
    y = np.array([np.nan if v is None else v for v in trace["y"]], dtype=float)
    out = {**trace, "y": [None if not np.isfinite(v) else float(v) for v in symlog(y)],
           "customdata": trace["y"],
           "hovertemplate": "alpha %{customdata} @ step %{x}<extra></extra>"}
    out.pop("meta", None)
    return out


def symlog_ticks(data: list, cell) -> tuple:
    """Tick positions and labels (0, ±1, ±10, ...) covering the symlog lines of ``cell``."""
    ys = [v for t in data if t.get("yaxis") == cell.yref for v in t.get("y", [])
          if v is not None]
    top = max([abs(v) for v in ys], default=1.0)
    decades = range(0, int(np.ceil(top)) + 1)
    values = sorted({0.0} | {s * 10.0 ** d for d in decades for s in (-1, 1)})
    return [float(symlog(v)) for v in values], [f"{v:g}" for v in values]
