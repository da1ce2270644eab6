"""What a panel is (:class:`Panel`), and the one loader that reads a panel's series from the
store within budget (:func:`load`).

A panel is a module of this package that satisfies :class:`Panel`: its required names, and any
of its optional hooks (:data:`HOOKS`, with their defaults). ``tests/dashboard/test_panel_base.py``
checks every panel against it, so a misspelt hook fails a test instead of being ignored.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from dashboard import downsample, settings, walltime
from dashboard.figures import run_colour
from instrument.store import schema
from instrument.store.errors import StoreError


class Panel(Protocol):
    """The contract of a panel module (modules are checked structurally, not subclassed).

    Required:

    ``NAME``      id used in component ids (``"grad_norm"``).
    ``TITLE``     heading of the panel's card.
    ``REQUIRES``  the series it draws (exact keys or fnmatch patterns, ``<...>`` for what is not
                  a series); every key :func:`needs` can ask for matches one of them (tested),
                  and docs/dashboard.md lists them.
    ``MISSING``   what to tell the user when none of them was recorded, and how to record them.
    ``OPTIONS``   ``(value, label)`` toggles shown above the graph (EMA, log y, ...).
    ``needs(keys, options) -> list[Need]``  which series to read, from what a run has.
    ``figure(runs, view) -> dict | None``   pure: a plotly figure dict from :class:`RunInput` s.

    Optional hooks, see :data:`HOOKS` for their defaults.
    """

    NAME: str
    TITLE: str
    REQUIRES: tuple
    MISSING: str
    OPTIONS: tuple

    def needs(self, keys: dict, options) -> list: ...

    def figure(self, runs: list, view: View): ...


HOOKS = {
    "GRAPH": True,
    # False: the panel has no graph (its ``extra`` is all it shows; the graph box is hidden)
    "RERENDER_ON": (),
    # head fields (see RunCatalog.head: "last", "events", "status", "series") whose change
    # re-renders the panel instead of appending to it
    "ALWAYS_SHOWN": False,
    # True: shown even when the runs recorded nothing it draws; otherwise such a panel is
    # hidden and named in the health strip's "not recorded" line
    "INSTRUMENTS": (),
    # the instruments recording its series: when they were on and the run went NaN/Inf, the
    # empty panel says so instead of asking to switch them on
    "FILTER": None,
    # placeholder text of the panel's search box (None: no box); its text is ``View.filter``
    "LAYER_FILTER": False,
    # True: the search box (FILTER) picks layers: layer series are read for matching layers only
    "load_extra": None,
    # load_extra(run, view) -> dict: extra reads (events, metadata), kept in RunInput.extra
    "extra": None,
    # extra(runs, view) -> Dash components under the graph (tables, notes); by default the
    # runs' read errors
}
"""Every optional hook of a :class:`Panel` with its default (as a comment: what it does)."""


def hook(panel, name: str):
    """Panel ``panel``'s optional hook ``name``, or its default from :data:`HOOKS`."""
    return getattr(panel, name, HOOKS[name])


READ_ERRORS = (StoreError, sqlite3.Error, OSError, ValueError, KeyError)
"""What reading a run can raise when the store is bad or changes underneath us (a run deleted,
a store rewritten); shown as the run's message, never as a traceback."""

LINE = "line"        # one line (scalar series)
LINES = "lines"      # one line per layer
HEATMAP = "heatmap"  # layer x step
BARS = "bars"        # one bar per layer at the selected step


@dataclass(frozen=True)
class Need:
    """A series a panel reads, and how it is drawn (which sets its point budget)."""

    key: str
    kind: str
    draw: str


@dataclass
class View:
    """What the user looks at: runs (first is the primary), replay step, highlighted layer."""

    runs: list
    step: int | None = None  # None: follow the last step
    layer: str | None = None
    options: tuple = ()
    filter: str = ""  # the panel's search box: keys (scalars) or layers it shows

    @classmethod
    def from_dict(cls, data: dict | None, options=(), filter: str | None = None) -> View:
        data = data or {}
        step = data.get("step")
        return cls(list(data.get("runs") or []), None if step is None else int(step),
                   data.get("layer"), tuple(options or ()), (filter or "").strip())


@dataclass
class RunInput:
    """One run's share of a panel: the series read for it (or why it could not be read)."""

    id: str
    label: str
    colour: str
    series: dict = field(default_factory=dict)   # key -> Downsampled (lines, heatmaps)
    bars: dict = field(default_factory=dict)     # key -> (step, layers, values)
    first_step: int | None = None
    last_step: int | None = None
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    error: str | None = None
    n_series: int | None = None
    base: int = schema.PYRAMID_BASE
    present: list = field(default_factory=list)  # keys the panel needs that the run has
    nonfinite_step: int | None = None  # first step with a NaN/Inf event, if any
    layer_filter: str = ""  # the search box's pattern its layer series were read with
    clock: walltime.Clock | None = None  # step -> seconds, when the view is on wall time

    def step(self, view: View) -> int | None:
        """The step this run shows for ``view`` (the selected one, else its last)."""
        return self.last_step if view.step is None else view.step

    def layers(self, key: str) -> list:
        """Layer names of layer series ``key`` as read (heatmap or bars), else []."""
        if key in self.series and self.series[key].layers is not None:
            return list(self.series[key].layers)
        return list(self.bars[key][1]) if key in self.bars else []

    def bucket(self, key: str) -> int:
        """Steps per point of the series ``key`` as read (1 = raw rows)."""
        return downsample.bucket_size(self.series[key].level, self.base)


def is_diagnosis_fact(key: str) -> bool:
    """True for avionics' internal facts recorded for the diagnosis rules (``criterion/*``,
    ``input/*``, ...): never shown among the user's metrics (the store's key registry says)."""
    return schema.is_diagnosis_fact(key)


def is_user_scalar(key: str) -> bool:
    """True for keys passed to ``monitor.log()`` by the user (the store's key registry says)."""
    return schema.is_user_scalar(key)


def user_scalars(keys: list) -> list:
    """Scalars logged with ``monitor.log()``: the loss first, then the rest by name."""
    own = [k for k in keys if is_user_scalar(k)]
    return sorted(own, key=lambda k: (k != schema.Keys.LOSS, k))


def budgets(needs_per_run: list, layer_counts: list) -> tuple:
    """``(points per line, columns per heatmap)`` for a figure drawing all runs' needs.

    Args:
        needs_per_run: per run, its list of :class:`Need`.
        layer_counts: per run, ``{key: number of layers}`` of its layer series.
    """
    lines = rows = 0
    for needs, counts in zip(needs_per_run, layer_counts):
        for need in needs:
            width = min(counts.get(need.key, 1), settings.MAX_BAR_LAYERS)
            if need.draw == LINE:
                lines += 1
            elif need.draw == LINES:
                lines += width
            elif need.draw == HEATMAP:
                rows += width
    return downsample.points_per_trace(lines), downsample.heatmap_columns(rows)


def load(panel, catalog, view: View) -> list:
    """Read what ``panel`` needs from every run of ``view`` (see the module docstring).

    Each run is read through one connection and one catalogue read (its reading session).
    Bad runs come back with ``error`` set (a clear message), never as an exception.
    """
    with ExitStack() as stack:
        opened = []
        for i, name in enumerate(view.runs):
            run, error = stack.enter_context(catalog.reading(name))
            item = RunInput(name, catalog.display_name(name), run_colour(i), error=error)
            needs, counts = [], {}
            if run is not None:
                try:
                    needs, counts = _inventory(panel, run, item, view)
                except READ_ERRORS as exc:  # shown in the panel, never raised to the page
                    run, item.error = None, _message(exc)
            opened.append((item, run, needs, counts))
        per_line, columns = budgets([o[2] for o in opened], [o[3] for o in opened])
        for item, run, needs, _ in opened:
            if run is None:
                continue
            try:
                item.layer_filter = view.filter if hook(panel, "LAYER_FILTER") else ""
                _read(run, item, needs, view, per_line, columns, item.layer_filter)
                if hook(panel, "load_extra") is not None:
                    item.extra = panel.load_extra(run, view)
                if walltime.on(view):
                    item.clock = walltime.read_clock(run, item, view)
            except READ_ERRORS as exc:
                item.error = _message(exc)
    return [o[0] for o in opened]


def _inventory(panel, run, item: RunInput, view: View) -> tuple:
    """Fill ``item``'s steps, meta and present keys; ``(needs found, layers per key)``."""
    item.first_step, item.last_step = run.step_range()
    item.meta = run.meta
    keys = {k: run.keys(k) for k in (schema.SCALAR, schema.LAYER)}
    item.n_series = sum(len(v) for v in keys.values())
    needs = [n for n in panel.needs(keys, view.options) if n.key in keys[n.kind]]
    item.present = sorted({n.key for n in needs})
    item.nonfinite_step = first_nonfinite(run)
    counts = {n.key: len(run.layer_names(n.key)) for n in needs if n.kind == schema.LAYER}
    return needs, counts


def nan_explains(panel, item) -> bool:
    """True if ``item``'s run went NaN/Inf while the instruments ``panel`` draws were on (its
    meta lists them), so an empty panel is explained by the NaN/Inf, not by a switch."""
    wanted = hook(panel, "INSTRUMENTS")
    on = set((item.meta or {}).get("instruments") or ())
    return item.nonfinite_step is not None and bool(wanted) and set(wanted) <= on


def first_nonfinite(run) -> int | None:
    """The first step of a NaN/Inf event of ``run``, or None (a panel with nothing to draw
    then says the values went non-finite, not that an instrument was off)."""
    df = run.events(codes=[schema.NONFINITE])
    steps = df["step"].dropna() if len(df) else []
    return int(min(steps)) if len(steps) else None


def select(names: list, pattern: str) -> list:
    """The ``names`` matching a search box's ``pattern``: a case-insensitive regular
    expression; text that is not a valid one is matched as plain text."""
    if not pattern:
        return list(names)
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        rx = re.compile(re.escape(pattern), re.IGNORECASE)
    return [n for n in names if rx.search(str(n))]


def keep_layers(layers, values, pattern: str) -> tuple:
    """``(layers, values)`` restricted to the layers matching ``pattern`` (the last axis of
    ``values`` runs over layers)."""
    if not pattern:
        return list(layers), values
    chosen = set(select(list(layers), pattern))
    idx = [j for j, n in enumerate(layers) if n in chosen]
    return [layers[j] for j in idx], np.asarray(values)[..., idx]


def _filtered(ds, pattern: str):
    """``ds`` with only the layers matching ``pattern`` (a layer panel's search box)."""
    names, mean = keep_layers(list(ds.layers), ds.mean, pattern)
    _, lo = keep_layers(list(ds.layers), ds.min, pattern)
    _, hi = keep_layers(list(ds.layers), ds.max, pattern)
    return replace(ds, layers=names, mean=mean, min=lo, max=hi)


def _read(run, item: RunInput, needs: list, view: View, per_line: int, columns: int,
          layer_filter: str = "") -> None:
    stop = item.last_step
    if stop is None:
        return
    for need in needs:
        if need.draw == BARS:
            found = run.at_step(need.key, item.step(view))
            if found is not None:
                step, layers, values = found
                layers, values = keep_layers(list(layers), np.asarray(values), layer_filter)
                item.bars[need.key] = (step, layers, values)
            continue
        budget = columns if need.draw == HEATMAP else per_line
        ds = run.series(need.key, need.kind, start=item.first_step, stop=stop,
                        max_points=budget)
        if ds is not None and layer_filter and need.kind == schema.LAYER:
            ds = _filtered(ds, layer_filter)
        if ds is not None:
            item.series[need.key] = ds


def cursor_of(item: RunInput, key: str) -> int | None:
    """The last step a rendered series covers (its run's last step when it was read, every
    step up to it final): live appends continue after it."""
    return item.last_step


def _message(exc: Exception) -> str:
    if isinstance(exc, StoreError):
        return str(exc)
    return f"could not read this run: {type(exc).__name__}: {exc}"
