"""Gradient signal and noise: mean GSNR, the batch size CABS suggests, and the early-stopping
criterion (stop when it stays above 0), over steps."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_noise"
TITLE = "GSNR, CABS and early stopping"
TOTALS = ((CK.total(CK.MEAN_GSNR), "mean GSNR"), (CK.total(CK.CABS), "CABS batch size"),
          (CK.total(CK.EARLY_STOPPING), "early-stopping criterion"))
REQUIRES = tuple(k for k, _ in TOTALS)
MISSING = ("None of GSNR, CABS, early stopping was recorded: they are in no preset; enable "
           "them with schedules={'mean_gsnr': N, 'cabs': N, 'early_stopping': N} or "
           "Preset(..., extra=(...)) and watch(..., loss_fn=criterion).")
OPTIONS = ()


def needs(keys: dict, options) -> list:
    return [cc.need(k, cc.SCALAR, cc.LINE) for k, _ in TOTALS]


def figure(runs: list, view) -> dict:
    if not any(k in r.series for r in runs for k in REQUIRES):
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([[t for _, t in TOTALS]])
    data = []
    for item in runs:
        for c, (key, _) in enumerate(TOTALS):
            if key in item.series:
                data += cc.line(item.series[key], cells[0][c], item.label, item.colour,
                                legend=c == 0)
    stop = cells[0][2]
    layout.setdefault("shapes", []).append(
        {"type": "line", "xref": f"{stop[0]} domain", "yref": stop[1], "x0": 0, "x1": 1,
         "y0": 0, "y1": 0, "line": {"color": "#c00", "dash": "dash", "width": 1},
         "name": "stop above"})
    for cell in cells[0]:
        cc.cursor(layout, cell, view.step)
    return {"data": data, "layout": layout}
