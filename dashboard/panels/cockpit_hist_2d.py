"""2-D histogram of (individual gradient element, parameter value) at the replay step, with
log-scaled counts: where in parameter space the gradient noise sits."""

from __future__ import annotations

import numpy as np

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK, HistogramBins

NAME = "cockpit_hist_2d"
TITLE = "Individual gradients vs parameter values"
REQUIRES = (CK.GRAD_HIST_2D,)
MISSING = ("No 2-D gradient histogram was recorded: enable preset='full' or "
           "schedules={'grad_hist_2d': N} with watch(..., loss_fn=criterion).")
OPTIONS = ()


def needs(keys: dict, options) -> list:
    return [cc.need(CK.GRAD_HIST_2D, cc.LAYER, cc.BARS)]


def matrix(labels, counts) -> tuple:
    """``(gradient centers, parameter centers, counts[param, gradient])`` from the bins."""
    gx, py = HistogramBins.parse_2d(labels)
    mat = np.asarray(counts, dtype=float).reshape(len(gx), len(py))
    def centers(left):
        left = np.asarray(left)
        w = left[1] - left[0] if len(left) > 1 else 1.0
        return left + w / 2
    return centers(gx), centers(py), mat.T


def figure(runs: list, view) -> dict:
    items = [(r, cc.at_step(r, CK.GRAD_HIST_2D, view)) for r in runs]
    items = [(r, got) for r, got in items if got is not None]
    if not items:
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([[f"{item.label} @ step {got[0]}" for item, got in items]],
                            height=340)
    data = []
    for (item, (step, labels, counts)), cell in zip(items, cells[0]):
        gx, py, mat = matrix(labels, counts)
        z = np.log10(mat + 1.0)
        data.append({"type": "heatmap", "x": cc._l(gx), "y": cc._l(py), "z": z.tolist(),
                     "colorscale": "Viridis", "colorbar": {"title": {"text": "log10(1+n)"}},
                     "xaxis": cell[0], "yaxis": cell[1],
                     "meta": {"key": CK.GRAD_HIST_2D, "at_step": step,
                              "total": float(np.nansum(mat))}})
        layout[cell[0].replace("x", "xaxis")]["title"] = {"text": "individual gradient"}
        layout[cell[1].replace("y", "yaxis")]["title"] = {"text": "parameter value"}
    return {"data": data, "layout": layout}
