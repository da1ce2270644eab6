"""2-D histogram of (individual gradient element, parameter value) pairs at the replay step,
with log-scaled counts: where in parameter space the gradient noise sits. Re-drawn when the
replay step moves or the run advances."""

from __future__ import annotations

import numpy as np
from dash import dcc

from dashboard import figures, settings
from dashboard.figures import Grid
from dashboard.panels.base import BARS, Need, View
from instrument.store import schema
from instrument.store.schema import CockpitKeys as CK
from instrument.store.schema import HistogramBins

NAME = "cockpit_hist_2d"
TITLE = "Individual gradients vs parameter values at the step"
REQUIRES = (CK.GRAD_HIST_2D,)
MISSING = ("No 2-D gradient histogram was recorded: watch(..., loss_fn=criterion, "
           "preset='full') or schedules={'grad_hist_2d': N}.")
OPTIONS = ()
GRAPH = False  # the heatmap lives in extra(): re-rendered on every step move
RERENDER_ON = ("last",)
"""...and whenever the run logs a step (it follows the last step when no step is selected)."""
COLOURSCALE = "Viridis"


def needs(keys: dict, options) -> list:
    return [Need(CK.GRAD_HIST_2D, schema.LAYER, BARS)]


def matrix(labels, counts) -> tuple:
    """``(gradient bin centers, parameter bin centers, counts[parameter, gradient])``."""
    gx, py = HistogramBins.parse_2d(labels)
    mat = np.asarray(counts, dtype=float).reshape(len(gx), len(py))

    def centers(left):
        left = np.asarray(left, dtype=float)
        width = left[1] - left[0] if len(left) > 1 else 1.0
        return left + width / 2

    return centers(gx), centers(py), mat.T


def figure(runs: list, view: View) -> dict:
    items = [r for r in runs if CK.GRAD_HIST_2D in r.bars]
    if not items:
        return figures.placeholder(MISSING)
    grid = Grid([(settings.ROW_HEIGHT_PX + 80, [1] * len(items))])
    data, notes = [], []
    for item, cell in zip(items, grid.cells[0]):
        step, labels, counts = item.bars[CK.GRAD_HIST_2D]
        gx, py, mat = matrix(labels, counts)
        notes.append(figures.title(grid, cell, f"{item.label} @ step {step}"))
        grid.axis(cell, "x")["title"] = {"text": "individual gradient element"}
        grid.axis(cell, "y")["title"] = {"text": "parameter value"}
        trace = figures.heatmap(cell, gx, [f"{v:.4g}" for v in py], np.log10(mat + 1.0),
                                colourscale=COLOURSCALE,
                                colorbar={"title": {"text": "log10(1+n)", "side": "right"}},
                                hover="gradient %{x:.3g}, parameter %{y}: log10(1+n) %{z:.2f}"
                                      "<extra></extra>")
        trace["meta"] = {"key": CK.GRAD_HIST_2D, "step": int(step),
                         "total": float(np.nansum(mat))}
        data.append(trace)
    return figures.figure(data, figures.base_layout(grid, annotations=notes, showlegend=False))


def extra(runs: list, view: View):
    """The figure as a graph under the panel title (re-rendered on step moves)."""
    good = [r for r in runs if r.error is None]
    return dcc.Graph(figure=figure(good, view), config={"displaylogo": False})
