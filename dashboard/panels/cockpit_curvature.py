"""Curvature: the Hessian's largest eigenvalue with its convergence band (the estimate plus or
minus its residual: some eigenvalue lies in it) and the Hessian trace over steps, and the
trace per parameter at the replay step."""

from __future__ import annotations

import numpy as np

from dashboard import figures
from dashboard.panels import cockpit_common as cc
from dashboard.panels.base import LINE, Need, View
from instrument.store import schema
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_curvature"
TITLE = "Curvature: largest eigenvalue and trace"
TOTALS = ((CK.HESS_MAX_EV, "largest Hessian eigenvalue"),
          (CK.total(CK.HESS_TRACE), "Hessian trace"))
PER_LAYER = ((CK.HESS_TRACE, "trace"),)
DRAWN = (CK.HESS_MAX_EV, CK.total(CK.HESS_TRACE), CK.HESS_TRACE)
"""The series that are drawn on their own (the residual only widens the eigenvalue's band)."""
REQUIRES = DRAWN + (CK.HESS_MAX_EV_RESIDUAL,)
MISSING = ("No curvature was recorded: preset='business' (trace) or 'full' (largest "
           "eigenvalue), or schedules={'hess_max_ev': N}, with watch(..., loss_fn=criterion).")
OPTIONS = ((cc.LOG_Y, "log y"),)


def needs(keys: dict, options) -> list:
    return cc.lines_and_bars_needs([k for k, _ in TOTALS], [k for k, _ in PER_LAYER]) + [
        Need(CK.HESS_MAX_EV_RESIDUAL, schema.SCALAR, LINE)]


def residual_band(item) -> tuple:
    """``(steps, low, high)``: the eigenvalue minus/plus its residual where both were read."""
    ev, res = item.series.get(CK.HESS_MAX_EV), item.series.get(CK.HESS_MAX_EV_RESIDUAL)
    if ev is None or res is None:
        return None
    steps, i, j = np.intersect1d(ev.step, res.step, return_indices=True)
    v, r = ev.mean[i], res.mean[j]
    ok = np.isfinite(v) & np.isfinite(r)
    spread = np.abs(v[ok]) * r[ok]
    return steps[ok], v[ok] - spread, v[ok] + spread


def figure(runs: list, view: View) -> dict:
    if not cc.any_data(runs, DRAWN):
        return figures.placeholder(MISSING)

    def bands(cells):
        out = []
        for item in runs:
            band = residual_band(item)
            if band is not None and len(band[0]):
                out += [dict(t, meta={"band": "residual"}) for t in figures.band(
                    cells[0], band[0], band[1], band[2], item.colour,
                    group=f"{item.id}:residual")]
        return out

    return cc.lines_and_bars(runs, view, TOTALS, PER_LAYER, logy=cc.LOG_Y in view.options,
                             under=bands)
