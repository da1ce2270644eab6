"""A bounded rolling window of the recorded series, and the robust statistics rules use on it.

The engine pushes each step's :class:`~instrument.store.records.StepData`; rules read the last
``n`` records of a series. Memory is bounded: at most ``maxlen`` records per series, plus the
first ``first`` values of each scalar (for rules about the start of training). Layer values are
kept in float32, the precision of the store, so that a rule sees the same numbers live and when
it re-runs on a saved run.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from instrument.store.records import StepData

FIRST_VALUES = 16
"""Values kept from the start of every scalar series (``History.first``)."""


class _Ring:
    """The last ``maxlen`` records of one series, in a preallocated buffer.

    Each row is written twice, at ``i`` and ``i + maxlen`` of a ``2 * maxlen`` buffer, so that
    the last ``n`` rows are always one contiguous slice: reading a window copies nothing.
    """

    def __init__(self, maxlen: int, layers: list | None):
        self.maxlen = maxlen
        self.layers = None if layers is None else list(layers)
        self.index = {n: i for i, n in enumerate(self.layers or ())}
        width = 1 if layers is None else len(self.layers)
        self._steps = np.zeros(2 * maxlen, dtype=np.int64)
        self._rows = np.full((2 * maxlen, width), np.nan,
                             dtype=np.float64 if layers is None else np.float32)
        self._pos = -1  # slot of the newest row
        self.count = 0
        self.first: list = []

    def __len__(self) -> int:
        return min(self.count, self.maxlen)

    def _append(self, step: int, row) -> None:
        self._pos = (self._pos + 1) % self.maxlen
        for slot in (self._pos, self._pos + self.maxlen):
            self._steps[slot] = step
            self._rows[slot] = row
        self.count += 1

    def push_scalar(self, step: int, value: float) -> None:
        self._append(step, float(value))
        if len(self.first) < FIRST_VALUES:
            self.first.append(float(value))

    def push_layers(self, step: int, layers, values) -> None:
        values = np.asarray(values, dtype=np.float32)
        if list(layers) != self.layers:  # a series that grew: keep one layer order
            for name in layers:
                if name not in self.index:
                    self.index[name] = len(self.layers)
                    self.layers.append(name)
            if len(self.layers) > self._rows.shape[1]:
                grown = np.full((2 * self.maxlen, len(self.layers)), np.nan, dtype=np.float32)
                grown[:, : self._rows.shape[1]] = self._rows
                self._rows = grown
            row = np.full(len(self.layers), np.nan, dtype=np.float32)
            row[[self.index[n] for n in layers]] = values
            values = row
        self._append(step, values)

    def window(self, n: int | None) -> tuple:
        """``(steps, rows)`` of the last ``n`` records (all kept if None), oldest first."""
        k = len(self) if n is None else min(n, len(self))
        end = self._pos + self.maxlen + 1
        return self._steps[end - k: end], self._rows[end - k: end]


class History:
    """Rolling windows of the series the active rules read.

    Args:
        maxlen: records kept per scalar series (at least), and per layer series unless
            ``sizes`` says otherwise.
        keys: the series to keep (None: all); ``"prefix/*"`` keeps all ``prefix/...`` series.
        sizes: records needed per series (layer series keep exactly that many: they are one
            value per parameter or module, so their windows are kept as short as the rules
            allow).
    """

    def __init__(self, maxlen: int, keys: Iterable[str] | None = None,
                 sizes: dict | None = None):
        self.maxlen = maxlen
        self.sizes = dict(sizes or {})
        keys = None if keys is None else set(keys)
        # "lr/*" keeps every series whose name starts with "lr/" (per-param-group scalars)
        self.prefixes = tuple(k[:-1] for k in keys or () if k.endswith("/*"))
        self.keys = None if keys is None else {k for k in keys if not k.endswith("/*")}
        self.step: int | None = None
        self.events: list = []  # events stored at source for the current step
        self.found: set = set()  # codes found so far (set by the engine)
        self._now: set = set()
        self._scalars: dict = {}
        self._layers: dict = {}

    def push(self, d: StepData) -> None:
        """Add one step (steps arrive in increasing order)."""
        self.step = d.step
        self.events = list(getattr(d, "events", ()) or ())
        self._now = set()
        for key, value in d.scalars.items():
            if self._wanted(key):
                ring = self._scalars.get(key)
                if ring is None:
                    ring = self._scalars[key] = _Ring(
                        max(self.maxlen, self.sizes.get(key, 0)), None)
                ring.push_scalar(d.step, value)
                self._now.add(key)
        for key, lv in d.layers.items():
            if self._wanted(key):
                ring = self._layers.get(key)
                if ring is None:
                    ring = self._layers[key] = _Ring(
                        max(1, self.sizes.get(key, self.maxlen)), list(lv.layers))
                ring.push_layers(d.step, lv.layers, lv.values)
                self._now.add(key)

    def _wanted(self, key: str) -> bool:
        return self.keys is None or key in self.keys or key.startswith(self.prefixes)

    # ---- reading ------------------------------------------------------------------------------
    def scalar_keys(self, prefix: str) -> list:
        """Scalar series kept whose names start with ``prefix``, sorted."""
        return sorted(k for k in self._scalars if k.startswith(prefix))

    def has(self, key: str) -> bool:
        """True if ``key`` was recorded at the current step."""
        return key in self._now

    def count(self, key: str) -> int:
        """How many records of ``key`` were seen since the start (not only those kept)."""
        ring = self._scalars.get(key) or self._layers.get(key)
        return 0 if ring is None else ring.count

    def now(self, key: str):
        """The current step's value of ``key`` (a float, or an array in ``names(key)`` order),
        or None if it was not recorded at this step."""
        if key not in self._now:
            return None
        if key in self._scalars:
            return float(self._scalars[key].window(1)[1][0, 0])
        return self._layers[key].window(1)[1][0].astype(np.float64)

    def scalar(self, key: str, n: int | None = None) -> tuple:
        """The last ``n`` records (all kept if None) of a scalar: ``(steps, values)``."""
        ring = self._scalars.get(key)
        if ring is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        steps, rows = ring.window(n)
        return steps, rows[:, 0]

    def layer(self, key: str, n: int | None = None) -> tuple:
        """The last ``n`` records of a layer series: ``(steps, matrix[records, layers], names)``.
        The matrix is float32 (the store's precision) and must not be modified."""
        ring = self._layers.get(key)
        if ring is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), []
        steps, rows = ring.window(n)
        return steps, rows, ring.layers

    def names(self, key: str) -> list:
        """Layer names of a layer series (empty if never recorded)."""
        ring = self._layers.get(key)
        return [] if ring is None else list(ring.layers)

    def first(self, key: str) -> np.ndarray:
        """The first values of a scalar series (up to :data:`FIRST_VALUES`)."""
        ring = self._scalars.get(key)
        return np.zeros(0) if ring is None else np.asarray(ring.first)


# ---- robust statistics shared by the rules -------------------------------------------------------
def finite(values: np.ndarray) -> np.ndarray:
    """The finite entries of ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def nanmedian(values, axis=None):
    """Median ignoring NaN; NaN where nothing is left. Fast for the small windows rules use
    (``np.nanmedian`` goes through masked arrays and costs about a millisecond per call)."""
    values = np.asarray(values, dtype=np.float64)
    if axis is None:
        values = values[~np.isnan(values)]
        return float(np.median(values)) if values.size else np.nan
    moved = np.sort(np.moveaxis(values, axis, -1), axis=-1)  # NaN sorts last
    n = (~np.isnan(moved)).sum(axis=-1)
    lo = np.maximum((n - 1) // 2, 0)[..., None]
    hi = np.maximum(n // 2, 0)[..., None]
    if moved.shape[-1] == 0:
        return np.full(moved.shape[:-1], np.nan)
    out = (np.take_along_axis(moved, lo, -1) + np.take_along_axis(moved, hi, -1))[..., 0] / 2
    return np.where(n > 0, out, np.nan)


def fmt(x: float) -> str:
    """A number for messages: 3 significant digits."""
    if x is None or not np.isfinite(x):
        return str(x)
    return f"{x:.3g}"
