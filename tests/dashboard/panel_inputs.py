"""Building panel inputs by hand (pure figure tests) and decoding what figures carry."""

from __future__ import annotations

import base64

import numpy as np

from dashboard.panels.base import RunInput
from instrument.store.reader import Downsampled


def series(key: str, steps, mean, *, layers=None, level: int = 0, lo=None, hi=None,
           count=None) -> Downsampled:
    """A :class:`Downsampled` from plain arrays (``lo``/``hi`` default to ``mean``)."""
    steps = np.asarray(steps, dtype=np.int64)
    mean = np.asarray(mean, dtype=np.float64)
    size = 4 ** level
    first = steps - (steps % size) if level else steps
    return Downsampled(key, level, steps, first,
                       np.full(len(steps), size) if count is None else np.asarray(count),
                       mean, mean if lo is None else np.asarray(lo, dtype=float),
                       mean if hi is None else np.asarray(hi, dtype=float), layers)


def run_input(run_id: str = "r", *, series_list=(), bars=None, first=0, last=None,
              colour="#1f77b4", meta=None, extra=None) -> RunInput:
    """A :class:`RunInput` with ``series_list`` and ``bars`` (``{key: (step, layers, values)}``)."""
    item = RunInput(run_id, run_id, colour, meta=meta or {}, extra=extra or {})
    for ds in series_list:
        item.series[ds.key] = ds
    item.bars = dict(bars or {})
    steps = [int(ds.step[-1]) for ds in series_list if len(ds.step)]
    item.first_step, item.last_step = first, (last if last is not None else max(steps, default=0))
    return item


def decode(spec):
    """A typed-array spec (or a plain list) as a numpy array."""
    if isinstance(spec, dict) and "bdata" in spec:
        arr = np.frombuffer(base64.b64decode(spec["bdata"]), "<" + spec["dtype"])
        if "shape" in spec:
            arr = arr.reshape([int(d) for d in spec["shape"].split(",")])
        return arr
    return np.asarray([np.nan if v is None else v for v in spec], dtype=float)


def traces(fig: dict, **match) -> list:
    """Traces of ``fig`` whose fields (or ``meta.live``/``meta.at_step`` fields) match."""
    out = []
    for t in fig["data"]:
        meta = t.get("meta") or {}
        flat = {**t, **meta.get("live", {}), **{f"at_{k}": v for k, v in
                                               meta.get("at_step", {}).items()}}
        if all(flat.get(k) == v for k, v in match.items()):
            out.append(t)
    return out


def cursors(fig: dict) -> list:
    """The cursor shapes of ``fig``."""
    return [s for s in fig["layout"]["shapes"] if s.get("name") == "cursor"]


def heatmaps(fig: dict) -> list:
    """The value heatmaps of ``fig`` (not the overlays marking exact zeros)."""
    return [t for t in traces(fig, type="heatmap") if t.get("name") != "zero"]
