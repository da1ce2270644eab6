"""Cockpit's alpha gauge: the distribution of alpha over all tracked steps against the most
recent ones, on the landscape it describes (-1: no progress, 0: the valley floor, 1: the
opposite slope at the same height), and alpha over steps."""

from __future__ import annotations

import numpy as np

from dashboard.panels import cockpit_common as cc
from instrument.store.schema import CockpitKeys as CK

NAME = "cockpit_alpha"
TITLE = "Step size: alpha"
REQUIRES = (CK.ALPHA,)
MISSING = ("No alpha was recorded. Enable it with watch(..., loss_fn=criterion, "
           "preset='economy') or schedules={'alpha': N}; it needs an optimizer.")
OPTIONS = ()
RECENT = 0.1
"""The "recent" histogram holds the last 10 % of the values (Cockpit's gauge)."""
RANGE = (-3.0, 3.0)
"""Histogram range; values outside count in the edge bins."""
BINS = 30


def needs(keys: dict, options) -> list:
    return [cc.need(CK.ALPHA, cc.LAYER, cc.LINE)]


def histogram(values: np.ndarray) -> tuple:
    """``(bin centers, densities)`` of ``values`` clipped into :data:`RANGE`."""
    edges = np.linspace(RANGE[0], RANGE[1], BINS + 1)
    counts, _ = np.histogram(np.clip(values, RANGE[0], RANGE[1]), edges)
    width = edges[1] - edges[0]
    dens = counts / max(counts.sum(), 1) / width
    return (edges[:-1] + edges[1:]) / 2, dens


def figure(runs: list, view) -> dict:
    items = [r for r in runs if CK.ALPHA in r.series]
    if not items:
        return cc.placeholder(MISSING)
    layout, cells = cc.grid([["alpha: all vs recent", "alpha per step"]], height=300)
    gauge, over = cells[0]
    data, top = [], 0.0
    for item in items:
        steps, values, _, _ = cc.column(item.series[CK.ALPHA], CK.ALPHA_COLUMN)
        if not len(values):
            continue
        n_recent = max(1, int(np.ceil(RECENT * len(values))))
        for part, name, opacity in ((values, "all", 0.35), (values[-n_recent:], "recent", 0.9)):
            centers, dens = histogram(part)
            top = max(top, float(dens.max()))
            data.append({"type": "bar", "x": cc._l(centers), "y": cc._l(dens),
                         "name": f"{item.label}: {name} ({len(part)})", "opacity": opacity,
                         "marker": {"color": item.colour}, "xaxis": gauge[0],
                         "yaxis": gauge[1], "meta": {"part": name}})
        data += cc.line(item.series[CK.ALPHA], over, item.label, item.colour,
                        layer=CK.ALPHA_COLUMN, legend=False)
    xs = np.linspace(-1.5, 1.5, 61)
    data.append({"type": "scatter", "mode": "lines", "x": cc._l(xs),
                 "y": cc._l(top * (xs ** 2)), "name": "landscape (alpha = -1 | 0 | 1)",
                 "line": {"color": "#999", "dash": "dash"}, "hoverinfo": "skip",
                 "xaxis": gauge[0], "yaxis": gauge[1], "meta": {"part": "parabola"}})
    layout["barmode"] = "overlay"
    layout[f"xaxis"]["range"] = list(RANGE)
    for a in (-1, 0, 1):
        layout.setdefault("shapes", []).append(
            {"type": "line", "xref": gauge[0], "yref": f"{gauge[1]} domain", "x0": a, "x1": a,
             "y0": 0, "y1": 1, "line": {"color": "#bbb", "width": 1}})
    cc.cursor(layout, over, view.step)
    return {"data": data, "layout": layout}
