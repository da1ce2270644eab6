"""Shared helpers of the Cockpit panels: pure plotly-dict builders over reader outputs.

The panels take the dashboard's per-run inputs by duck typing: objects with ``label``,
``colour``, ``series`` (key -> ``instrument.store.reader.Downsampled``) and ``bars`` (key ->
``(step, labels, values)`` as ``Run.at_step`` returns), and a view with ``step`` (the replay
step, None = last), ``layer`` and ``options``. No torch.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from instrument.store import schema

SCALAR, LAYER = schema.SCALAR, schema.LAYER
LINE, HEATMAP, BARS = "line", "heatmap", "bars"
EMA_ALPHA = 0.2
"""Smoothing of the EMA overlays (Cockpit's instruments use 0.2)."""
ROW_HEIGHT_PX = 220
GAP = 0.08


def need(key: str, kind: str, draw: str) -> tuple:
    """What a panel reads: ``(key, kind, draw)`` (the dashboard's ``Need`` fields)."""
    return key, kind, draw


def placeholder(text: str) -> dict:
    """An empty figure that says why there is nothing to draw."""
    return {"data": [], "layout": {"height": 120, "xaxis": {"visible": False},
                                   "yaxis": {"visible": False},
                                   "annotations": [{"text": text, "showarrow": False,
                                                    "xref": "paper", "yref": "paper",
                                                    "x": 0.5, "y": 0.5}],
                                   "meta": {"placeholder": text}}}


def grid(titles: Sequence[Sequence[str]], height: int = ROW_HEIGHT_PX) -> tuple:
    """A layout with ``len(titles)`` rows of equally wide cells; returns ``(layout, cells)``
    where ``cells[r][c] = (xaxis name, yaxis name)`` ("x", "x2", ...)."""
    layout = {"height": height * len(titles) + 80, "showlegend": True,
              "margin": {"l": 60, "r": 20, "t": 30, "b": 40}, "annotations": [],
              "legend": {"orientation": "h"}}
    cells, n, rows = [], 0, len(titles)
    for r, row in enumerate(titles):
        top = 1 - r / rows
        bottom = top - 1 / rows + (GAP if r < rows - 1 else 0)
        out = []
        for c, title in enumerate(row):
            n += 1
            suffix = "" if n == 1 else str(n)
            left = c / len(row) + (0.04 if c else 0)
            right = (c + 1) / len(row) - (0.04 if c < len(row) - 1 else 0)
            layout[f"xaxis{suffix}"] = {"domain": [left, right], "anchor": f"y{suffix}"}
            layout[f"yaxis{suffix}"] = {"domain": [bottom, top - 0.02], "anchor": f"x{suffix}"}
            layout["annotations"].append({"text": title, "showarrow": False, "xref": "paper",
                                          "yref": "paper", "x": (left + right) / 2, "y": top,
                                          "xanchor": "center", "yanchor": "bottom"})
            out.append((f"x{suffix}", f"y{suffix}"))
        cells.append(out)
    return layout, cells


def column(ds, layer: Optional[str] = None):
    """``(steps, mean, min, max)`` of a Downsampled scalar series (or one layer of a layer
    series), NaN rows dropped."""
    mean, lo, hi = ds.mean, ds.min, ds.max
    if ds.layers is not None:
        j = ds.layers.index(layer) if layer is not None else 0
        mean, lo, hi = mean[:, j], lo[:, j], hi[:, j]
    keep = ~np.isnan(mean)
    return ds.step[keep], mean[keep], lo[keep], hi[keep]


def line(ds, cell, name: str, colour: str, *, layer: Optional[str] = None, ema: bool = False,
         legend: bool = True) -> list:
    """Traces of one series: its line, a min-max band when downsampled, and optionally an EMA."""
    steps, mean, lo, hi = column(ds, layer)
    x, y = cell
    traces = []
    if ds.level > 0 and len(steps):
        traces.append({"type": "scatter", "x": _l(steps) + _l(steps[::-1]),
                       "y": _l(hi) + _l(lo[::-1]), "fill": "toself", "mode": "lines",
                       "line": {"width": 0}, "fillcolor": colour, "opacity": 0.2,
                       "hoverinfo": "skip", "showlegend": False, "xaxis": x, "yaxis": y})
    traces.append({"type": "scatter", "mode": "lines+markers" if len(steps) < 50 else "lines",
                   "x": _l(steps), "y": _l(mean), "name": name, "legendgroup": name,
                   "line": {"color": colour, "width": 1 if ema else 2},
                   "opacity": 0.5 if ema else 1.0, "showlegend": legend,
                   "xaxis": x, "yaxis": y, "meta": {"key": ds.key, "layer": layer}})
    if ema and len(steps):
        traces.append({"type": "scatter", "mode": "lines", "x": _l(steps),
                       "y": _l(ema_of(mean)), "name": f"{name} (EMA)", "legendgroup": name,
                       "line": {"color": colour, "width": 2}, "showlegend": False,
                       "xaxis": x, "yaxis": y, "meta": {"key": ds.key, "ema": True}})
    return traces


def ema_of(values: np.ndarray, alpha: float = EMA_ALPHA) -> np.ndarray:
    """Exponential moving average (the first value starts it)."""
    out = np.empty(len(values))
    acc = None
    for i, v in enumerate(values):
        acc = v if acc is None else alpha * v + (1 - alpha) * acc
        out[i] = acc
    return out


def cursor(layout: dict, cell, step: Optional[int]) -> None:
    """A vertical line at the replay step in ``cell``."""
    if step is None:
        return
    layout.setdefault("shapes", []).append(
        {"type": "line", "xref": cell[0], "yref": f"{cell[1]} domain", "x0": step, "x1": step,
         "y0": 0, "y1": 1, "line": {"color": "#888", "dash": "dot", "width": 1},
         "name": "cursor"})


def at_step(item, key: str, view) -> Optional[tuple]:
    """``(step, labels, values)`` of ``key`` at the view's step for one run, if read."""
    got = item.bars.get(key)
    if got is None:
        return None
    step, labels, values = got
    return int(step), list(labels), np.asarray(values, dtype=float)


def per_layer_bars(item, key: str, view, cell, colour: str, name: str) -> list:
    """Horizontal bars, one per layer, at the replay step (NaN = not recorded: left out)."""
    got = at_step(item, key, view)
    if got is None:
        return []
    step, labels, values = got
    keep = ~np.isnan(values)
    return [{"type": "bar", "orientation": "h", "x": _l(values[keep]),
             "y": [lb for lb, k in zip(labels, keep) if k], "name": f"{name} @ {step}",
             "marker": {"color": colour}, "xaxis": cell[0], "yaxis": cell[1],
             "showlegend": False, "meta": {"key": key, "at_step": step}}]


def _l(a) -> list:
    """JSON-ready list (NaN -> None)."""
    return [None if (isinstance(v, float) and np.isnan(v)) else v
            for v in np.asarray(a).tolist()]
