"""Gradient signal and noise: the mean gradient signal-to-noise ratio, the batch size the CABS
rule suggests, and the early-stopping criterion (stop when it stays above 0), over steps."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from dashboard.panels.base import View
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_noise"
TITLE = "GSNR, CABS and early stopping"
TOTALS = ((CK.total(CK.MEAN_GSNR), "mean GSNR"), (CK.total(CK.CABS), "CABS batch size"),
          (CK.total(CK.EARLY_STOPPING), "early-stopping criterion (stop above 0)"))
REQUIRES = tuple(k for k, _ in TOTALS)
MISSING = ("None of GSNR, CABS or early stopping was recorded: they are in no preset; enable "
           "them with schedules={'mean_gsnr': N, 'cabs': N, 'early_stopping': N} and "
           "watch(..., loss_fn=criterion).")
OPTIONS = ((cc.EMA, "EMA"),)


def needs(keys: dict, options) -> list:
    return cc.lines_and_bars_needs([k for k, _ in TOTALS])


def figure(runs: list, view: View) -> dict:
    if not cc.any_data(runs, REQUIRES):
        return cc.figures.placeholder(MISSING)
    return cc.lines_and_bars(runs, view, TOTALS, smooth=cc.EMA in view.options, zero_line=2)
