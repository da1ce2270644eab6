"""The Takeuchi Information Criterion (diagonal and trace approximations) over steps, and
TICDiag per parameter at the replay step."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from dashboard.panels.base import View
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_tic"
TITLE = "TIC"
TOTALS = ((CK.total(CK.TIC_DIAG), "TIC (diagonal)"), (CK.total(CK.TIC_TRACE), "TIC (trace)"))
PER_LAYER = ((CK.TIC_DIAG, "TICDiag"),)
REQUIRES = tuple(k for k, _ in TOTALS) + (CK.TIC_DIAG,)
MISSING = ("No TIC was recorded: preset='business' (TICDiag) or schedules={'tic_trace': N}, "
           "with watch(..., loss_fn=criterion).")
OPTIONS = ((cc.LOG_Y, "log y"),)


def needs(keys: dict, options) -> list:
    return cc.lines_and_bars_needs([k for k, _ in TOTALS], [k for k, _ in PER_LAYER])


def figure(runs: list, view: View) -> dict:
    if not cc.any_data(runs, REQUIRES):
        return cc.figures.placeholder(MISSING)
    return cc.lines_and_bars(runs, view, TOTALS, PER_LAYER, logy=cc.LOG_Y in view.options)
