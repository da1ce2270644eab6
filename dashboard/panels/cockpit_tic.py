"""The Takeuchi Information Criterion (diagonal and trace approximations) over steps, and
TICDiag per parameter at the replay step."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_tic"
TITLE = "TIC"
TOTALS = ((CK.total(CK.TIC_DIAG), "TIC (diagonal)"), (CK.total(CK.TIC_TRACE), "TIC (trace)"))
REQUIRES = tuple(k for k, _ in TOTALS) + (CK.TIC_DIAG,)
MISSING = ("No TIC was recorded: enable preset='business' (TICDiag) or "
           "schedules={'tic_trace': N} with watch(..., loss_fn=criterion).")
LOG_Y = "logy"
OPTIONS = ((LOG_Y, "log y"),)


def needs(keys: dict, options) -> list:
    return [cc.need(k, cc.SCALAR, cc.LINE) for k, _ in TOTALS] + [
        cc.need(CK.TIC_DIAG, cc.LAYER, cc.BARS)]


def figure(runs: list, view) -> dict:
    if not any(k in r.series or k in r.bars for r in runs for k in REQUIRES):
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([[t for _, t in TOTALS], ["TICDiag per parameter at the step", ""]])
    data = []
    for item in runs:
        for c, (key, _) in enumerate(TOTALS):
            if key in item.series:
                data += cc.line(item.series[key], cells[0][c], item.label, item.colour,
                                legend=c == 0)
        data += cc.per_layer_bars(item, CK.TIC_DIAG, view, cells[1][0], item.colour,
                                  item.label)
    for c, cell in enumerate(cells[0]):
        cc.cursor(layout, cell, view.step)
        if LOG_Y in (view.options or ()):
            layout[f"yaxis{'' if c == 0 else c + 1}"]["type"] = "log"
    return {"data": data, "layout": layout}
