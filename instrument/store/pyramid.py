"""The downsampling pyramid: count/mean/min/max per bucket, at several resolutions.

Level ``L`` (1 <= L <= levels) groups steps into buckets ``step // base**L``. Buckets are built
hierarchically: level 1 aggregates raw steps, and level ``L`` only receives the *closed* buckets
of level ``L - 1``, so the work per step is amortized O(1) whatever the number of levels. Only
closed buckets are written; a reader covers the still-open tail of a level with the closed
buckets of the finer levels and, last, the raw points (see ``Run.series``).
NaN means "not recorded" and is skipped; infinities are kept (min/max/mean show them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BucketRow:
    """One closed bucket, ready to insert into the ``buckets`` table."""

    level: int
    bucket: int
    n: int  # number of steps aggregated
    first_step: int
    last_step: int
    count: np.ndarray  # per column: steps with a recorded (non-NaN) value
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray


class _Records:
    """Aggregates as parallel arrays, one row per raw step or bucket. ``ext`` holds
    ``[max, -min]`` side by side so one ``fmax`` reduction yields both extremes."""

    __slots__ = ("first", "last", "n", "acc", "ext")

    def __init__(self, first, last, n, acc, ext):
        self.first, self.last, self.n = first, last, n
        self.acc = acc  # [count | sum] per column
        self.ext = ext  # [max | -min] per column

    @classmethod
    def raw(cls, steps, values):
        finite = ~np.isnan(values)
        acc = np.concatenate([finite, np.where(finite, values, 0.0)], axis=1)
        ext = np.concatenate([values, -values], axis=1)
        return cls(steps, steps, np.ones(len(steps), dtype=np.int64), acc, ext)

    @property
    def width(self):
        return self.acc.shape[1] // 2

    def reduce(self, starts, ends):
        """Combine the row groups ``[starts[i], ends[i])``."""
        return _Records(self.first[starts], self.last[ends - 1], np.add.reduceat(self.n, starts),
                        np.add.reduceat(self.acc, starts, 0), np.fmax.reduceat(self.ext, starts, 0))

    def merge_first(self, other: _Records) -> None:
        """Fold the single-row ``other`` (an earlier part of the same bucket) into row 0."""
        w, ow = self.width, other.width
        acc, ext = other.acc, other.ext
        if ow < w:  # layers that appeared later: pad the older part
            acc = np.concatenate([acc[:, :ow], np.zeros((1, w - ow)), acc[:, ow:],
                                  np.zeros((1, w - ow))], axis=1)
            ext = np.concatenate([ext[:, :ow], np.full((1, w - ow), np.nan), ext[:, ow:],
                                  np.full((1, w - ow), np.nan)], axis=1)
        self.first[0] = other.first[0]
        self.n[0] += other.n[0]
        self.acc[0] += acc[0]
        np.fmax(self.ext[0], ext[0], out=self.ext[0])

    def rows(self, level, size):
        w = self.width
        count, total = self.acc[:, :w], self.acc[:, w:]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        mx, mn = self.ext[:, :w], -self.ext[:, w:]
        return [BucketRow(level, int(self.first[i] // size), int(self.n[i]), int(self.first[i]),
                          int(self.last[i]), count[i], mean[i], mn[i], mx[i])
                for i in range(len(self.first))]


class SeriesPyramid:
    """Builds the closed buckets of every level for one series, incrementally.

    Args:
        levels: number of levels above the raw level 0.
        base: bucket growth factor between levels.
    """

    def __init__(self, levels: int, base: int):
        self.levels = levels
        self.base = base
        self.last_step = None
        self._open: dict[int, _Records] = {}  # level -> the (single-row) bucket being filled

    def add(self, steps: np.ndarray, values: np.ndarray) -> list[BucketRow]:
        """Aggregate new rows (``values[i]`` at ``steps[i]``) and return the buckets they closed.

        Steps at or before the last aggregated step are ignored: a value re-written for an
        old step updates the raw level only.
        """
        steps = np.asarray(steps, dtype=np.int64)
        values = np.atleast_2d(np.asarray(values, dtype=np.float64))
        if self.last_step is not None:
            keep = steps > self.last_step
            steps, values = steps[keep], values[keep]
        if steps.size == 0:
            return []
        if np.any(steps[1:] < steps[:-1]):
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
        self.last_step = int(steps[-1])
        rows, incoming = [], _Records.raw(steps, values)
        for level in range(1, self.levels + 1):
            closed = self._feed(level, incoming)
            if closed is None:
                break  # nothing closed here, so nothing new reaches the coarser levels
            rows.extend(closed.rows(level, self.base**level))
            incoming = closed
        return rows

    def _feed(self, level, incoming: _Records):
        """Add finer-level rows to this level; return the buckets that closed, or None."""
        size = self.base**level
        ids = incoming.first // size
        starts = np.concatenate(([0], np.flatnonzero(ids[1:] != ids[:-1]) + 1))
        ends = np.append(starts[1:], len(ids))
        grouped = incoming.reduce(starts, ends)
        pending = self._open.get(level)
        if pending is not None:
            if pending.first[0] // size == ids[0]:
                grouped.merge_first(pending)
            else:  # the pending bucket ended before these rows: it is closed
                grouped = _concat(pending, grouped)
        last = len(grouped.first) - 1
        self._open[level] = _take(grouped, slice(last, None))
        return _take(grouped, slice(0, last)) if last > 0 else None


def _take(r: _Records, idx) -> _Records:
    return _Records(r.first[idx], r.last[idx], r.n[idx], r.acc[idx], r.ext[idx])


def _concat(a: _Records, b: _Records) -> _Records:
    if a.width < b.width:
        grow = b.width - a.width
        pad0, padn = np.zeros((1, grow)), np.full((1, grow), np.nan)
        w = a.width
        a = _Records(a.first, a.last, a.n,
                     np.concatenate([a.acc[:, :w], pad0, a.acc[:, w:], pad0], axis=1),
                     np.concatenate([a.ext[:, :w], padn, a.ext[:, w:], padn], axis=1))
    return _Records(np.concatenate([a.first, b.first]), np.concatenate([a.last, b.last]),
                    np.concatenate([a.n, b.n]), np.concatenate([a.acc, b.acc]),
                    np.concatenate([a.ext, b.ext]))
