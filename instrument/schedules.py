"""When an instrument runs: schedules are callables ``step -> bool`` (no torch).

``every(10)`` runs at steps 0, 10, 20, ...; ``log_spaced()`` runs densely early and sparsely late;
``never()`` switches an instrument off. ``watch(..., schedules={...})`` accepts these, a plain int
(``every(n)``), ``None``/``False`` (``never()``) or any callable taking the step index.
"""

from __future__ import annotations

import math
from collections.abc import Callable


class Schedule:
    """A named predicate over optimizer steps (0-based)."""

    def __init__(self, fn: Callable[[int], bool], description: str):
        self._fn = fn
        self.description = description

    def __call__(self, step: int) -> bool:
        return bool(self._fn(step))

    def __repr__(self) -> str:
        return self.description


def every(n: int, offset: int = 0) -> Schedule:
    """Run at steps ``offset, offset + n, offset + 2n, ...``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"every(n) needs an integer n >= 1, got {n!r}")
    if offset < 0:
        raise ValueError(f"every(..., offset) must be >= 0, got {offset!r}")
    return Schedule(lambda s: s >= offset and (s - offset) % n == 0, f"every({n}, offset={offset})")


def log_spaced(per_decade: int = 10, dense_until: int = 100) -> Schedule:
    """Every step below ``dense_until``, then about ``per_decade`` evenly spaced steps per decade.

    In the decade ``[10**d, 10**(d+1))`` the interval is ``10**d // per_decade`` (at least 1).
    """
    if per_decade < 1 or dense_until < 0:
        raise ValueError("log_spaced needs per_decade >= 1 and dense_until >= 0")

    def fn(s: int) -> bool:
        if s < dense_until:
            return True
        interval = max(1, 10 ** int(math.log10(max(s, 1))) // per_decade)
        return s % interval == 0

    return Schedule(fn, f"log_spaced(per_decade={per_decade}, dense_until={dense_until})")


def dense_then_every(first: int, n: int) -> Schedule:
    """Every step below ``first``, then every ``n`` steps (early problems show at once, the
    rest of the run costs a tenth for ``n=10``)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or first < 0:
        raise ValueError(f"dense_then_every needs first >= 0 and an integer n >= 1, got "
                         f"{first!r}, {n!r}")
    return Schedule(lambda s: s < first or s % n == 0,
                    f"dense_then_every(first={first}, n={n})")


def dense_then_pairs(first: int, n: int) -> Schedule:
    """Every step below ``first``, then two consecutive steps every ``n`` (``k*n`` and
    ``k*n + 1``). For step-to-step comparisons (is this batch the previous one?) at a fraction
    ``2/n`` of the cost: a pair of neighbours is seen at every interval, and a data order that
    repeats with period ``n`` cannot make sparse samples look alike."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2 or first < 0:
        raise ValueError(f"dense_then_pairs needs first >= 0 and an integer n >= 2, got "
                         f"{first!r}, {n!r}")
    return Schedule(lambda s: s < first or s % n < 2, f"dense_then_pairs(first={first}, n={n})")


def never() -> Schedule:
    """Never run (the instrument is off)."""
    return Schedule(lambda s: False, "never()")


ScheduleSpec = Schedule | Callable[[int], bool] | int | bool | None


def as_schedule(spec: ScheduleSpec, what: str = "schedule") -> Schedule:
    """Turn a user's schedule spec into a :class:`Schedule`, with a clear error otherwise."""
    if isinstance(spec, Schedule):
        return spec
    if spec is None or spec is False:
        return never()
    if spec is True:
        return every(1)
    if isinstance(spec, int):
        return every(spec)
    if callable(spec):
        return Schedule(spec, getattr(spec, "__name__", repr(spec)))
    raise TypeError(f"{what}: expected an int (every n steps), a Schedule such as "
                    f"instrument.every(10) or instrument.log_spaced(), None to switch it off, "
                    f"or a callable step -> bool; got {spec!r}")
