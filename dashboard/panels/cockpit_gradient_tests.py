"""The three gradient tests of Cockpit (norm, inner product, orthogonality) over steps for all
parameters together, and per parameter at the replay step. Values well above 1: the
mini-batch gradient is dominated by noise (a larger batch would help)."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from dashboard.panels.base import View
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_gradient_tests"
TITLE = "Gradient tests"
TESTS = ((CK.NORM_TEST, "norm test"), (CK.INNER_TEST, "inner-product test"),
         (CK.ORTHO_TEST, "orthogonality test"))
TOTALS = tuple((CK.total(k), t) for k, t in TESTS)
REQUIRES = tuple(k for k, _ in TOTALS) + tuple(k for k, _ in TESTS)
MISSING = ("No gradient tests were recorded: watch(..., loss_fn=criterion, preset='economy') "
           "or schedules={'norm_test': N, 'inner_test': N, 'ortho_test': N}.")
OPTIONS = ((cc.LOG_Y, "log y"),)
THRESHOLD = 1.0
"""Each value is the smallest theta (nu) at which the batch passes its test; Cockpit's gauge
draws the pass region at 1. Above it the batch gradient is dominated by noise: a larger batch
helps."""


def needs(keys: dict, options) -> list:
    return cc.lines_and_bars_needs([k for k, _ in TOTALS], [k for k, _ in TESTS])


def figure(runs: list, view: View) -> dict:
    if not cc.any_data(runs, REQUIRES):
        return cc.figures.placeholder(MISSING)
    return cc.lines_and_bars(runs, view, TOTALS, TESTS, logy=cc.LOG_Y in view.options,
                             reference=(THRESHOLD, f"dashed: {THRESHOLD:g}, above it noise "
                                                   "dominates"))
