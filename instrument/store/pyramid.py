"""The downsampling pyramid: running count/mean/min/max per bucket, at several resolutions.

Level ``L`` (1 <= L <= levels) groups steps into buckets ``step // base**L``. The writer keeps one
open bucket per level in memory and upserts it at every flush, so a reader always sees complete
aggregates up to the last flush and never has to scan raw rows of a long run.
NaN means "not recorded" and is skipped; infinities are kept (min/max/mean show them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class BucketRow:
    """One aggregated bucket, ready to upsert into the ``buckets`` table."""

    level: int
    bucket: int
    n: int  # number of steps aggregated
    first_step: int
    last_step: int
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray


class _Open:
    """Accumulator of the bucket currently being filled at one level."""

    __slots__ = ("bucket", "n", "first", "last", "count", "sum", "min", "max")

    def __init__(self, bucket, n, first, last, count, total, mn, mx):
        self.bucket, self.n, self.first, self.last = bucket, n, first, last
        self.count, self.sum, self.min, self.max = count, total, mn, mx

    def merge(self, n, last, count, total, mn, mx):
        self.n += n
        self.last = last
        self.count = self.count + count
        self.sum = self.sum + total
        self.min = np.fmin(self.min, mn)
        self.max = np.fmax(self.max, mx)

    def pad(self, width):
        grow = width - self.count.shape[0]
        if grow > 0:
            self.count = np.concatenate([self.count, np.zeros(grow)])
            self.sum = np.concatenate([self.sum, np.zeros(grow)])
            self.min = np.concatenate([self.min, np.full(grow, np.nan)])
            self.max = np.concatenate([self.max, np.full(grow, np.nan)])

    def row(self, level) -> BucketRow:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count > 0, self.sum / np.maximum(self.count, 1), np.nan)
        return BucketRow(level, self.bucket, self.n, self.first, self.last, mean, self.min, self.max)


class SeriesPyramid:
    """Maintains every level's open bucket for one series.

    Args:
        levels: number of levels above the raw level 0.
        base: bucket growth factor between levels.
    """

    def __init__(self, levels: int, base: int):
        self.levels = levels
        self.base = base
        self.last_step = None
        self._open: dict[int, _Open] = {}

    def add(self, steps: np.ndarray, values: np.ndarray) -> list[BucketRow]:
        """Aggregate new rows (``values[i]`` at ``steps[i]``, increasing) and return changed buckets.

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
        order = np.argsort(steps, kind="stable")
        steps, values = steps[order], values[order]
        self.last_step = int(steps[-1])
        finite = ~np.isnan(values)
        zeroed = np.where(finite, values, 0.0)
        rows = []
        for level in range(1, self.levels + 1):
            rows.extend(self._add_level(level, steps, values, finite, zeroed))
        return rows

    def _add_level(self, level, steps, values, finite, zeroed):
        ids = steps // self.base**level
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        ends = np.r_[starts[1:], len(ids)]
        count = np.add.reduceat(finite.astype(np.float64), starts, axis=0)
        total = np.add.reduceat(zeroed, starts, axis=0)
        mn = np.fmin.reduceat(values, starts, axis=0)
        mx = np.fmax.reduceat(values, starts, axis=0)
        rows = []
        cur = self._open.get(level)
        for g, (s, e) in enumerate(zip(starts, ends)):
            bucket, n = int(ids[s]), int(e - s)
            if cur is not None and cur.bucket == bucket:
                cur.pad(values.shape[1])
                cur.merge(n, int(steps[e - 1]), count[g], total[g], mn[g], mx[g])
            else:
                if cur is not None:
                    rows.append(cur.row(level))  # closed: final version of that bucket
                cur = _Open(bucket, n, int(steps[s]), int(steps[e - 1]),
                            count[g], total[g], mn[g], mx[g])
        self._open[level] = cur
        rows.append(cur.row(level))  # still open: upserted again at the next flush
        return rows
