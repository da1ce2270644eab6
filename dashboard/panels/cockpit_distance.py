"""Cockpit's distance gauge: how far the parameters are from where ``watch()`` found them and
how large each update is, over steps (with an EMA option), and the distance per parameter at
the replay step."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from dashboard.panels.base import View
from instrument.store.schema import CockpitKeys as CK
from instrument.store.schema import Keys

NAME = "cockpit_distance"
TITLE = "Distance and update size"
TOTALS = ((CK.total(CK.DISTANCE), "distance from initialization"),
          (Keys.UPDATE_NORM_TOTAL, "update size"))
PER_LAYER = ((CK.DISTANCE, "distance"),)
REQUIRES = (CK.total(CK.DISTANCE), Keys.UPDATE_NORM_TOTAL, CK.DISTANCE)
MISSING = ("No distance or update size was recorded: preset='economy' or "
           "schedules={'distance': N} (update sizes come from the core 'update' instrument).")
OPTIONS = ((cc.EMA, "EMA"),)


def needs(keys: dict, options) -> list:
    return cc.lines_and_bars_needs([k for k, _ in TOTALS], [k for k, _ in PER_LAYER])


def figure(runs: list, view: View) -> dict:
    if not cc.any_data(runs, REQUIRES):
        return cc.figures.placeholder(MISSING)
    return cc.lines_and_bars(runs, view, TOTALS, PER_LAYER, smooth=cc.EMA in view.options)
