"""The three gradient tests (norm, inner product, orthogonality) over steps, for all
parameters together and per parameter at the replay step. Values well above 1 mean the
mini-batch gradient is dominated by noise (a larger batch would help)."""

from __future__ import annotations

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_gradient_tests"
TITLE = "Gradient tests"
TESTS = ((CK.NORM_TEST, "norm test"), (CK.INNER_TEST, "inner-product test"),
         (CK.ORTHO_TEST, "orthogonality test"))
REQUIRES = tuple(CK.total(k) for k, _ in TESTS) + tuple(k for k, _ in TESTS)
MISSING = ("No gradient tests were recorded: enable preset='economy' or "
           "schedules={'norm_test': N, ...} with watch(..., loss_fn=criterion).")
LOG_Y = "logy"
OPTIONS = ((LOG_Y, "log y"),)


def needs(keys: dict, options) -> list:
    out = [cc.need(CK.total(k), cc.SCALAR, cc.LINE) for k, _ in TESTS]
    return out + [cc.need(k, cc.LAYER, cc.BARS) for k, _ in TESTS]


def figure(runs: list, view) -> dict:
    if not any(k in r.series or k in r.bars for r in runs for k in REQUIRES):
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([[t for _, t in TESTS], [f"{t} per parameter" for _, t in TESTS]])
    data = []
    for item in runs:
        for c, (key, _) in enumerate(TESTS):
            total = CK.total(key)
            if total in item.series:
                data += cc.line(item.series[total], cells[0][c], item.label, item.colour,
                                legend=c == 0)
            data += cc.per_layer_bars(item, key, view, cells[1][c], item.colour, item.label)
    for c, cell in enumerate(cells[0]):
        cc.cursor(layout, cell, view.step)
        if LOG_Y in (view.options or ()):
            layout[f"yaxis{'' if c == 0 else c + 1}"]["type"] = "log"
    return {"data": data, "layout": layout}
