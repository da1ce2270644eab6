"""Distance from the initial parameters and the size of each update (Cockpit's distance
gauge): totals over steps with an EMA, and per parameter at the replay step."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK, Keys

NAME = "cockpit_distance"
TITLE = "Distance and update size"
DIST_TOTAL = CK.total(CK.DISTANCE)
REQUIRES = (DIST_TOTAL, Keys.UPDATE_NORM_TOTAL, CK.DISTANCE)
MISSING = ("No distance or update size was recorded: enable preset='economy' or "
           "schedules={'distance': N} (update sizes come from the core 'update' instrument).")
EMA = "ema"
OPTIONS = ((EMA, "EMA"),)


def needs(keys: dict, options) -> list:
    return [cc.need(DIST_TOTAL, cc.SCALAR, cc.LINE),
            cc.need(Keys.UPDATE_NORM_TOTAL, cc.SCALAR, cc.LINE),
            cc.need(CK.DISTANCE, cc.LAYER, cc.BARS)]


def figure(runs: list, view) -> dict:
    if not any(k in r.series or k in r.bars for r in runs for k in REQUIRES):
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([["distance from initialization", "update size"],
                             ["distance per parameter at the step", ""]])
    data = []
    ema = EMA in (view.options or ())
    for item in runs:
        for key, cell in ((DIST_TOTAL, cells[0][0]), (Keys.UPDATE_NORM_TOTAL, cells[0][1])):
            if key in item.series:
                data += cc.line(item.series[key], cell, f"{item.label}", item.colour, ema=ema,
                                legend=key == DIST_TOTAL)
        data += cc.per_layer_bars(item, CK.DISTANCE, view, cells[1][0], item.colour,
                                  item.label)
    for cell in cells[0]:
        cc.cursor(layout, cell, view.step)
    return {"data": data, "layout": layout}
