"""Curvature: the Hessian's largest eigenvalue with its convergence band (the estimate plus
or minus its residual, within which some eigenvalue lies) and the Hessian trace, over steps,
and the trace per parameter at the replay step."""

from __future__ import annotations

import numpy as np

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_curvature"
TITLE = "Curvature: max eigenvalue and trace"
TRACE_TOTAL = CK.total(CK.HESS_TRACE)
REQUIRES = (CK.HESS_MAX_EV, TRACE_TOTAL, CK.HESS_TRACE)
MISSING = ("No curvature was recorded: enable preset='business' (trace) or 'full' (largest "
           "eigenvalue), or schedules={'hess_max_ev': N}, with watch(..., loss_fn=criterion).")
OPTIONS = ()


def needs(keys: dict, options) -> list:
    return [cc.need(CK.HESS_MAX_EV, cc.SCALAR, cc.LINE),
            cc.need(CK.HESS_MAX_EV_RESIDUAL, cc.SCALAR, cc.LINE),
            cc.need(TRACE_TOTAL, cc.SCALAR, cc.LINE),
            cc.need(CK.HESS_TRACE, cc.LAYER, cc.BARS)]


def band(ev, res, cell, colour) -> list:
    """The residual band ``ev * (1 +- relative residual)`` at the steps both exist."""
    s1, v, _, _ = cc.column(ev)
    s2, r, _, _ = cc.column(res)
    common, i1, i2 = np.intersect1d(s1, s2, return_indices=True)
    if not len(common):
        return []
    hi = v[i1] + np.abs(v[i1]) * r[i2]
    lo = v[i1] - np.abs(v[i1]) * r[i2]
    return [{"type": "scatter", "x": cc._l(common) + cc._l(common[::-1]),
             "y": cc._l(hi) + cc._l(lo[::-1]), "fill": "toself", "mode": "lines",
             "line": {"width": 0}, "fillcolor": colour, "opacity": 0.2, "hoverinfo": "skip",
             "showlegend": False, "xaxis": cell[0], "yaxis": cell[1],
             "meta": {"band": "residual"}}]


def figure(runs: list, view) -> dict:
    if not any(k in r.series or k in r.bars for r in runs for k in REQUIRES):
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([["largest Hessian eigenvalue", "Hessian trace"],
                             ["trace per parameter at the step", ""]])
    data = []
    for item in runs:
        if CK.HESS_MAX_EV in item.series:
            if CK.HESS_MAX_EV_RESIDUAL in item.series:
                data += band(item.series[CK.HESS_MAX_EV], item.series[CK.HESS_MAX_EV_RESIDUAL],
                             cells[0][0], item.colour)
            data += cc.line(item.series[CK.HESS_MAX_EV], cells[0][0], item.label, item.colour)
        if TRACE_TOTAL in item.series:
            data += cc.line(item.series[TRACE_TOTAL], cells[0][1], item.label, item.colour,
                            legend=CK.HESS_MAX_EV not in item.series)
        data += cc.per_layer_bars(item, CK.HESS_TRACE, view, cells[1][0], item.colour,
                                  item.label)
    for cell in cells[0]:
        cc.cursor(layout, cell, view.step)
    return {"data": data, "layout": layout}
