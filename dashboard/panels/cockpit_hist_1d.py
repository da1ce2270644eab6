"""Histogram of the individual gradient elements at the replay step (Cockpit shows only the
last tracked step; here any step): all parameters, or the highlighted parameter's own."""

from __future__ import annotations

import numpy as np

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK, HistogramBins

NAME = "cockpit_hist_1d"
TITLE = "Individual gradients: histogram"
REQUIRES = (CK.GRAD_HIST_1D, CK.GRAD_HIST_1D + "/*")
MISSING = ("No gradient histogram was recorded: enable preset='economy' or "
           "schedules={'grad_hist_1d': N} with watch(..., loss_fn=criterion).")
LOG_Y = "logy"
OPTIONS = ((LOG_Y, "log counts"),)


def needs(keys: dict, options) -> list:
    layer_keys = keys.get(cc.LAYER, []) if isinstance(keys, dict) else []
    own = [k for k in layer_keys if k.startswith(CK.GRAD_HIST_1D + "/")]
    return [cc.need(k, cc.LAYER, cc.BARS) for k in [CK.GRAD_HIST_1D] + own]


def bins(labels) -> tuple:
    """``(left edges, width)`` of uniform bins from their labels."""
    left = np.asarray(HistogramBins.parse_1d(labels))
    width = float(left[1] - left[0]) if len(left) > 1 else 1.0
    return left, width


def figure(runs: list, view) -> dict:
    key = CK.GRAD_HIST_1D
    if view.layer and any(CK.hist_1d_of(view.layer) in r.bars for r in runs):
        key = CK.hist_1d_of(view.layer)
    items = [(r, cc.at_step(r, key, view)) for r in runs]
    items = [(r, got) for r, got in items if got is not None]
    if not items:
        return cc.placeholder(MISSING)
    what = "all parameters" if key == CK.GRAD_HIST_1D else view.layer
    layout, cells = cc.grid([[f"individual gradient elements ({what})"]], height=300)
    cell = cells[0][0]
    data = []
    for item, (step, labels, counts) in items:
        left, width = bins(labels)
        data.append({"type": "bar", "x": cc._l(left + width / 2), "y": cc._l(counts),
                     "width": width, "name": f"{item.label} @ step {step}",
                     "marker": {"color": item.colour}, "opacity": 0.7 if len(items) > 1 else 1,
                     "xaxis": cell[0], "yaxis": cell[1],
                     "meta": {"key": key, "at_step": step, "total": float(np.nansum(counts))}})
    layout["barmode"] = "overlay"
    layout["bargap"] = 0
    if LOG_Y in (view.options or ()):
        layout["yaxis"]["type"] = "log"
    layout["xaxis"]["title"] = {"text": "gradient element (edge bins include outliers)"}
    return {"data": data, "layout": layout}
