"""The store writer: a background thread that owns the SQLite connection and does all disk I/O.

The training thread only calls :meth:`StoreWriter.submit`, which appends an item to a deque
without waking the writer thread (no lock hand-off, no GIL ping-pong per step).
Items are :class:`StepData`, :class:`Event`, or any object with a ``materialize()`` method that
returns ``(list[StepData], list[Event])``; the torch side uses the latter so that waiting for a
device-to-host copy and decoding the statistics also happen on this thread. Every
``flush_interval`` seconds the thread writes what it has in one transaction and refreshes the
heartbeat, so a killed process leaves everything up to about one flush interval behind it.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Optional

import numpy as np

from instrument.store import schema
from instrument.store.pyramid import SeriesPyramid
from instrument.store.records import Event, LayerValues, StepData

log = logging.getLogger("avionics")

Observer = Callable[[StepData], Iterable[Event]]
"""Called on the writer thread with each step's data; returns events to store (e.g. warnings)."""

_CLOSE = object()


class _Barrier:
    def __init__(self):
        self.done = threading.Event()


def create_store(path: str, meta: dict) -> None:
    """Create the database file with its tables, schema version and initial metadata."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        with conn:
            for ddl in schema.DDL:
                conn.execute(ddl)
            if conn.execute("SELECT COUNT(*) FROM schema").fetchone()[0] == 0:
                conn.execute("INSERT INTO schema (version) VALUES (?)", (schema.SCHEMA_VERSION,))
            _put_meta(conn, meta)
    finally:
        conn.close()


def _put_meta(conn, meta: dict) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
        [(k, json.dumps(v, default=str)) for k, v in meta.items()],
    )


class _Series:
    """A registered series: its row id, layer order and pyramid."""

    def __init__(self, sid: int, kind: str, layers: Optional[list]):
        self.id = sid
        self.kind = kind
        self.layers = list(layers) if layers is not None else None
        self.index = {n: i for i, n in enumerate(self.layers or ())}
        self.dtype = schema.SCALAR_DTYPE if kind == schema.SCALARS_KIND else schema.LAYER_DTYPE
        self.pyramid = SeriesPyramid(schema.PYRAMID_LEVELS, schema.PYRAMID_BASE)
        self.rows: dict[int, np.ndarray] = {}  # step -> values, pending in the current flush
        self._same = None

    def place_scalars(self, scalars: dict) -> tuple[np.ndarray, bool]:
        """A row of this (scalars) series from ``{key: value}``; new keys become columns."""
        grew = False
        for key in scalars:
            if key not in self.index:
                self.index[key] = len(self.layers)
                self.layers.append(key)
                grew = True
        out = np.full(len(self.layers), np.nan)
        for key, value in scalars.items():
            out[self.index[key]] = value
        return out, grew

    def place(self, lv: LayerValues) -> tuple[np.ndarray, bool]:
        """Values in this series' layer order; new layer names are appended (returns grew)."""
        if lv.layers is self._same or list(lv.layers) == self.layers:
            self._same = lv.layers  # instruments pass the same name list every step
            return lv.values, False
        grew = False
        for name in lv.layers:
            if name not in self.index:
                self.index[name] = len(self.layers)
                self.layers.append(name)
                grew = True
        out = np.full(len(self.layers), np.nan)
        out[[self.index[n] for n in lv.layers]] = lv.values
        return out, grew


class StoreWriter:
    """Owns one run's database and writes to it from a background thread.

    Args:
        path: the database file (created with :func:`create_store` if absent).
        meta: initial metadata; ``status`` becomes ``running``.
        flush_interval: seconds between transactions (the crash-loss window).
        observers: callables run on the writer thread on each step's data.
        strict: re-raise errors of this thread on the training thread (tests) instead of
            disabling with one warning.
    """

    def __init__(self, path: str, meta: dict, *, flush_interval: float = 0.5,
                 observers: Iterable[Observer] = (), strict: bool = False):
        self.path = path
        self.flush_interval = flush_interval
        self.observers = list(observers)
        self.strict = strict
        self._queue: deque = deque()  # append/popleft are atomic: no lock on the hot path
        self._wake = threading.Event()  # set only by flush() and close()
        self._series: dict[tuple, _Series] = {}
        self._error: Optional[BaseException] = None
        self._failed = False
        self._closed = False
        self._pid = os.getpid()
        create_store(path, {**meta, "status": schema.RUNNING, "heartbeat": time.time()})
        self._thread = threading.Thread(target=self._run, name="avionics-writer", daemon=True)
        self._thread.start()

    # ---- training-thread side ---------------------------------------------------------------
    def submit(self, item: Any) -> None:
        """Queue a StepData, Event, materializable record or ``{"meta": {...}}`` update."""
        self._raise_pending()
        if not self._failed and not self._closed:
            self._queue.append(item)

    def set_meta(self, **values) -> None:
        """Queue metadata updates (JSON-serializable values)."""
        self.submit({"meta": values})

    def flush(self, timeout: float = 30.0) -> None:
        """Block until everything submitted so far is committed to disk."""
        if self._failed or self._closed:
            self._raise_pending()
            return
        barrier = _Barrier()
        self._queue.append(barrier)
        self._wake.set()
        if not barrier.done.wait(timeout):
            raise TimeoutError(f"avionics writer did not flush within {timeout}s")
        self._raise_pending()

    def close(self, status: str = schema.FINISHED, **meta) -> None:
        """Write what is queued, set the final status and stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.append({"meta": {"status": status, "end_time": time.time(), **meta}})
        self._queue.append(_CLOSE)
        self._wake.set()
        self._thread.join(timeout=120)
        if self._thread.is_alive():
            log.warning("avionics: the store writer did not finish within 120 s; %s may lack "
                        "the last steps", self.path)
        self._raise_pending()

    @property
    def alive(self) -> bool:
        """False once the writer has stopped (closed or failed)."""
        return not self._failed and not self._closed

    def _raise_pending(self) -> None:
        if self.strict and self._error is not None:
            err, self._error = self._error, None
            raise err

    # ---- writer-thread side -----------------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            self._fail(exc)
            return self._drain_after_failure()
        pending, barriers = [], []
        next_flush = time.monotonic() + self.flush_interval
        next_beat = 0.0
        closing = False
        while not closing:
            wait = max(0.0, min(next_flush, next_beat) - time.monotonic())
            items = self._take(wait)
            for item in items:
                if item is _CLOSE:
                    closing = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    pending.append(item)
            now = time.monotonic()
            if pending and (now >= next_flush or closing or barriers):
                self._write(conn, pending, beat=now >= next_beat)
                pending = []
                next_flush = now + self.flush_interval
                next_beat = now + schema.HEARTBEAT_INTERVAL_S
            elif now >= next_beat:
                self._write(conn, [], beat=True)
                next_beat = now + schema.HEARTBEAT_INTERVAL_S
            if not pending and next_flush <= now:
                # idle: look again one interval later (a past deadline made the wait 0 and the
                # thread spin, taking a core and the GIL from training until the next item)
                next_flush = now + self.flush_interval
            for b in barriers:
                b.done.set()
            barriers = []
            if self._failed:
                return self._drain_after_failure()
        conn.close()

    def _take(self, wait: float) -> list:
        if wait > 0:
            self._wake.wait(wait)
        self._wake.clear()
        items = []
        while self._queue:
            items.append(self._queue.popleft())
        return items

    def _drain_after_failure(self) -> None:
        while True:  # release flush() callers; drop data (the one warning was given)
            for item in self._take(1.0):
                if isinstance(item, _Barrier):
                    item.done.set()
                if item is _CLOSE:
                    return

    def _fail(self, exc: BaseException) -> None:
        self._failed = True
        self._error = exc
        log.warning("avionics: cannot write the run store %s (%s: %s). Recording has stopped; "
                    "training continues.", self.path, type(exc).__name__, exc)

    def _write(self, conn, items: list, beat: bool) -> None:
        steps, events, meta = [], [], {}
        for item in items:
            if isinstance(item, Event):
                events.append(item)
            elif isinstance(item, dict):
                meta.update(item.get("meta", {}))
            elif isinstance(item, StepData):
                steps.append(item)
            else:
                try:
                    data, evs = item.materialize()
                except Exception as exc:  # last resort; records guard their own instruments
                    if self.strict:
                        self._error = exc
                    log.warning("avionics: dropped one step record: %s: %s",
                                type(exc).__name__, exc)
                    continue
                steps.extend(data)
                events.extend(evs)
        steps.sort(key=lambda d: d.step)
        if self.observers:
            for d in steps:  # let observers see what instruments reported for the step
                d.events = [e for e in events if e.step == d.step]
        events.extend(self._observe(steps))
        if beat:
            meta["heartbeat"] = time.time()
        try:
            with conn:
                self._write_steps(conn, steps)
                conn.executemany(
                    "INSERT INTO events (step, wall_time, code, severity, layer, message, "
                    "evidence, suggestion, rank) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(e.step, e.wall_time, e.code, e.severity, e.layer, e.message,
                      None if e.evidence is None else json.dumps(e.evidence, default=str),
                      e.suggestion, e.rank) for e in events])
                _put_meta(conn, meta)
        except (sqlite3.Error, OSError) as exc:
            self._fail(exc)

    def _observe(self, steps: list) -> list:
        out = []
        for observer in list(self.observers):
            try:
                for d in steps:
                    out.extend(observer(d))
            except Exception as exc:  # fail open: drop this observer, keep recording
                if self.strict:
                    self._error = exc
                self.observers.remove(observer)
                name = getattr(observer, "__name__", type(observer).__name__)
                msg = f"observer {name} failed and was disabled: {type(exc).__name__}: {exc}"
                log.warning("avionics: %s", msg)
                out.append(Event(schema.INSTRUMENT_ERROR, schema.WARNING, msg,
                                 step=steps[0].step if steps else None, layer=name))
        return out

    def _write_steps(self, conn, steps: list) -> None:
        if not steps:
            return
        conn.executemany("INSERT OR REPLACE INTO steps (step, wall_time) VALUES (?, ?)",
                         [(d.step, d.wall_time) for d in steps])
        touched, grown = {}, {}
        for d in steps:
            if d.scalars:
                s = self._get_series(conn, schema.SCALARS_SERIES, schema.SCALARS_KIND, [])
                values, grew = s.place_scalars(d.scalars)
                s.rows[d.step] = values
                touched[s.id] = s
                if grew:
                    grown[s.id] = s
            for key, lv in d.layers.items():
                s = self._get_series(conn, key, schema.LAYER, lv.layers)
                values, grew = s.place(lv)
                s.rows[d.step] = values
                touched[s.id] = s
                if grew:
                    grown[s.id] = s
        for s in grown.values():
            conn.execute("UPDATE series SET layers = ? WHERE id = ?", (json.dumps(s.layers), s.id))
        for s in touched.values():
            self._write_series(conn, s)

    def _write_series(self, conn, s: _Series) -> None:
        step_list = sorted(s.rows)
        width = max(len(v) for v in s.rows.values())
        mat = np.full((len(step_list), width), np.nan)
        for i, st in enumerate(step_list):
            v = s.rows[st]
            mat[i, : len(v)] = v
        s.rows = {}
        conn.executemany(
            "INSERT OR REPLACE INTO points (series, step, value) VALUES (?, ?, ?)",
            [(s.id, st, mat[i].astype(s.dtype).tobytes()) for i, st in enumerate(step_list)])
        rows = s.pyramid.add(np.array(step_list), mat)
        if rows:
            conn.executemany(
                "INSERT OR REPLACE INTO buckets (series, level, bucket, n, first_step, "
                "last_step, count, mean, min, max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(s.id, r.level, r.bucket, r.n, r.first_step, r.last_step,
                  r.count.astype(schema.LAYER_DTYPE).tobytes(), r.mean.astype(s.dtype).tobytes(),
                  r.min.astype(s.dtype).tobytes(), r.max.astype(s.dtype).tobytes())
                 for r in rows])

    def _get_series(self, conn, key: str, kind: str, layers) -> _Series:
        s = self._series.get((key, kind))
        if s is None:
            cur = conn.execute("INSERT INTO series (key, kind, layers) VALUES (?, ?, ?)",
                               (key, kind, json.dumps(list(layers))))
            s = self._series[(key, kind)] = _Series(cur.lastrowid, kind, layers)
        return s
