"""Server-side reduction of series before they are sent: budgets, bucketing, smoothing, encoding.

Pure numpy functions, no Dash. The store's pyramid (:meth:`instrument.store.reader.Run.series`)
does the heavy downsampling; these helpers size the requests, aggregate the raw rows that
arrive during a live run into buckets of the same width, and encode values compactly.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np

from dashboard import settings


def points_per_trace(n_traces: int) -> int:
    """Line points each of ``n_traces`` lines of one figure may hold (see settings budgets)."""
    share = settings.MAX_FIGURE_POINTS // max(n_traces, 1)
    return int(min(settings.MAX_TRACE_POINTS, max(settings.MIN_TRACE_POINTS, share)))


def heatmap_columns(total_rows: int) -> int:
    """Step columns of each heatmap in a figure whose heatmaps have ``total_rows`` layers."""
    share = settings.MAX_FIGURE_CELLS // max(total_rows, 1)
    return int(max(1, min(settings.MAX_HEATMAP_COLUMNS, share)))


def bucket_size(level: int, base: int) -> int:
    """Steps per bucket at pyramid level ``level`` (1 for raw rows)."""
    return int(base) ** int(level)


def tail_buckets(steps: np.ndarray, values: np.ndarray, size: int, last_step: int) -> tuple:
    """Aggregate the raw rows a live poll found into the pyramid's buckets of ``size`` steps.

    A bucket ``b`` covers steps ``[b * size, (b + 1) * size)``. It is complete once the run
    has logged its last step (``last_step >= (b + 1) * size - 1``); the bucket still being
    filled comes last, so the page shows the newest steps at once and replaces that point at
    the next poll. Rows after ``last_step`` are left for later. NaN (not recorded) is ignored
    inside a bucket.

    Args:
        steps: increasing steps of the rows, shape ``[n]``.
        values: the rows, shape ``[n]`` or ``[n, layers]``.
        size: bucket width in steps (1 = raw rows, never partial).
        last_step: the last step the run has logged.

    Returns:
        ``(step, mean, min, max, complete, consumed)``: per bucket its last step present and
        the aggregates (same trailing shape as ``values``); how many of them are complete (the
        rest, at most one, is still filling); and the last step of the last complete bucket
        (the new cursor), or None when no bucket is complete.
    """
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    keep = steps <= last_step
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        empty = values[:0]
        return steps, empty, empty, empty, 0, None
    if size <= 1:
        return steps, values, values, values, len(steps), int(steps[-1])
    ids = steps // size
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    finite = ~np.isnan(values)
    count = np.add.reduceat(finite.astype(np.float64), starts, axis=0)
    total = np.add.reduceat(np.where(finite, values, 0.0), starts, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        mn = np.fmin.reduceat(values, starts, axis=0)
        mx = np.fmax.reduceat(values, starts, axis=0)
    bucket_ids = ids[starts]
    complete = int(np.count_nonzero((bucket_ids + 1) * size - 1 <= last_step))
    consumed = int((bucket_ids[complete - 1] + 1) * size - 1) if complete else None
    return steps[ends - 1], mean, mn, mx, complete, consumed


def ema(values: Sequence[float], weight: float = settings.EMA_WEIGHT,
        counts: Sequence[int] | None = None, state: list | None = None) -> tuple:
    """Debiased exponential moving average, as TensorBoard's smoothing slider.

    ``s_t = num_t / den_t`` with ``num_t = w * num_{t-1} + (1 - w) * x_t`` and
    ``den_t = w * den_{t-1} + (1 - w)``. A point that stands for ``n`` steps (a bucket) uses the
    weight ``w ** n``. NaN inputs give NaN and leave the average unchanged.

    Args:
        values: the series.
        weight: weight of the past, in ``[0, 1)``.
        counts: steps each value stands for (default 1 each).
        state: ``[num, den]`` returned by a previous call, to continue a live series.

    Returns:
        ``(smoothed, state)``: a float64 array and the state to continue from.
    """
    x = np.asarray(values, dtype=np.float64)
    n = np.ones(len(x)) if counts is None else np.asarray(counts, dtype=np.float64)
    num, den = (0.0, 0.0) if state is None else (float(state[0]), float(state[1]))
    out = np.full(len(x), np.nan)
    for i in range(len(x)):  # sequential by nature; lines hold <= MAX_TRACE_POINTS points
        if np.isnan(x[i]):
            continue
        w = weight ** n[i]
        num = w * num + (1.0 - w) * x[i]
        den = w * den + (1.0 - w)
        out[i] = num / den if den > 0 else x[i]
    return out, [num, den]


def round_sig(values, digits: int = settings.SIGNIFICANT_DIGITS) -> list:
    """Values rounded to ``digits`` significant digits as a JSON-ready list (NaN -> None).

    Rounding is done as ``round(x * 10**k) / 10**k`` with an exact power of ten, so the
    shortest text of each result is the rounded decimal (``0.00123457``, not 17 digits).
    Infinities are kept (JSON has none: they become None too, shown as gaps).
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    out = x.copy()
    ok = np.isfinite(x) & (x != 0)
    if ok.any():
        mag = np.floor(np.log10(np.abs(x[ok]))).astype(np.int64)
        k = digits - 1 - mag
        v = x[ok]
        res = np.empty_like(v)
        up = (k >= 0) & (k <= 22)  # 10**k is exact up to 1e22
        res[up] = np.round(v[up] * 10.0 ** k[up]) / 10.0 ** k[up]
        down = k < 0
        res[down] = np.round(v[down] / 10.0 ** -k[down]) * 10.0 ** -k[down]
        rest = ~(up | down)  # tiny magnitudes: leave as they are
        res[rest] = v[rest]
        out[ok] = res
    result = out.tolist()
    bad = ~np.isfinite(out)
    if bad.any():
        for i in np.flatnonzero(bad):
            result[i] = None
    return result


def int_list(steps) -> list:
    """Steps as a JSON-ready list of Python ints (appendable with ``Patch.extend``)."""
    return np.asarray(steps, dtype=np.int64).tolist()


def typed_array(values, dtype: str = "f4") -> dict:
    """A plotly.js typed-array spec (``{"dtype", "bdata", "shape"}``) for a 1-D or 2-D array.

    About 2.7x smaller than JSON text for float32 and decoded natively by the browser; used for
    heatmaps, which are always replaced wholesale (typed arrays cannot be appended to).
    """
    arr = np.ascontiguousarray(np.asarray(values, dtype=np.dtype(dtype).newbyteorder("<")))
    spec = {"dtype": np.dtype(dtype).str.lstrip("<|"), "bdata": base64.b64encode(arr.tobytes())
            .decode("ascii")}
    if arr.ndim > 1:
        spec["shape"] = ", ".join(str(d) for d in arr.shape)
    return spec


def log10_positive(values) -> np.ndarray:
    """``log10`` of positive values, NaN elsewhere (zeros and negatives have no log colour)."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    pos = x > 0
    out[pos] = np.log10(x[pos])
    return out


def decade_ticks(lo: float, hi: float, max_ticks: int = settings.COLOURBAR_TICKS) -> tuple:
    """Colour-bar ticks for log10 data: positions (integer exponents) and labels ``1e-3``."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return [], []
    first, last = int(np.floor(lo)), int(np.ceil(hi))
    stride = max(1, int(np.ceil((last - first + 1) / max_ticks)))
    exps = list(range(first, last + 1, stride))
    return exps, [f"1e{e}" for e in exps]
