"""The store worker: owns a run's SQLite connection and writes plain records to it.

It runs either inside a child process (the default: ``python -m instrument.store``, fed
by :class:`~instrument.store.writer.StoreWriter` through a pipe, so that writing, the
downsampling pyramid and the diagnosis rules never compete with training for the GIL) or on
the writer thread itself. Nothing here imports torch.

Pipe protocol (both directions): frames of an 8-byte little-endian length and a pickle.
Parent -> child: ``("init", path, observers, strict)`` first, then ``("write", items, beat)``,
``("names", token, names)``, ``("sync", token)`` and ``("close",)``. Child -> parent:
``("ack", token)``, ``("log", name, level, message)``, ``("error", exception)`` (strict),
``("failed", exception)`` (the store cannot be written) and ``("closed",)``.
"""

from __future__ import annotations

import json
import logging
import pickle
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from instrument.store import schema
from instrument.store.pyramid import SeriesPyramid
from instrument.store.records import Event, LayerValues, StepData

log = logging.getLogger("avionics")

Observer = Callable[[StepData], Iterable[Event]]
"""Called with each step's data, in step order; returns events to store (e.g. warnings)."""

_FRAME = struct.Struct("<Q")


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

    def __init__(self, sid: int, kind: str, layers: list | None):
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


class StoreWorker:
    """Writes batches of plain records (StepData, Event, ``{"meta": {...}}``) in transactions.

    Args:
        path: the database file, created by :func:`create_store`.
        observers: run on each step's data; their events are stored too. A failing observer is
            dropped with one warning and an ``instrument_error`` event.
        strict: observer errors are kept in ``pending_error`` for the caller to raise.
    """

    def __init__(self, path: str, observers: Iterable[Observer] = (), strict: bool = False):
        self.path = path
        self.observers = list(observers)
        self.strict = strict
        self.pending_error = None
        self._series: dict = {}
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=5000")

    def write(self, items: list, beat: bool = False) -> None:
        """Write ``items`` in one transaction (sqlite3.Error/OSError propagate)."""
        steps, events, meta = [], [], {}
        for item in items:
            if isinstance(item, Event):
                events.append(item)
            elif isinstance(item, dict):
                meta.update(item.get("meta", {}))
            elif isinstance(item, StepData):
                steps.append(item)
        steps.sort(key=lambda d: d.step)
        if self.observers:
            for d in steps:  # let observers see what instruments reported for the step
                d.events = [e for e in events if e.step == d.step]
        events.extend(self._observe(steps))
        if beat:
            meta["heartbeat"] = time.time()
        conn = self.conn
        with conn:
            self._write_steps(conn, steps)
            conn.executemany(
                "INSERT INTO events (step, wall_time, code, severity, layer, message, "
                "evidence, suggestion, rank) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(e.step, e.wall_time, e.code, e.severity, e.layer, e.message,
                  None if e.evidence is None else json.dumps(e.evidence, default=str),
                  e.suggestion, e.rank) for e in events])
            _put_meta(conn, meta)

    def close(self) -> None:
        self.conn.close()

    def _observe(self, steps: list) -> list:
        out = []
        for observer in list(self.observers):
            try:
                for d in steps:
                    out.extend(observer(d))
            except Exception as exc:  # fail open: drop this observer, keep recording
                if self.strict:
                    self.pending_error = exc
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


# ---- the child process ------------------------------------------------------------------------
def send(stream, message) -> None:
    """Write one frame."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def receive(stream):
    """Read one frame; None at end of stream."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (size,) = _FRAME.unpack(head)
    data = stream.read(size)
    return None if len(data) < size else pickle.loads(data)


class _ForwardLogs(logging.Handler):
    """Sends log records to the parent, which re-emits them under the user's logging set-up."""

    def __init__(self, out, lock):
        super().__init__()
        # not ``self.lock``: that is the Handler's own lock, which handle() holds around emit()
        self.out, self.frame_lock = out, lock

    def emit(self, record):
        with self.frame_lock:
            send(self.out, ("log", record.name, record.levelno, record.getMessage()))


def _decode_items(items, names: dict) -> list:
    out = []
    for item in items:
        if isinstance(item, tuple) and item and item[0] == "step":
            _, step, wall, scalars, layers = item
            d = StepData(step, wall_time=wall, scalars=scalars)
            for key, (token, values) in layers.items():
                lv = LayerValues.__new__(LayerValues)
                lv.layers, lv.values = names[token], values
                d.layers[key] = lv
            out.append(d)
        else:
            out.append(item)
    return out


class _Server:
    """The child's side of the pipe: one StoreWorker driven by the parent's messages."""

    def __init__(self, inp, out, lock):
        self.inp, self.out, self.lock = inp, out, lock
        self.worker, self.names, self.failed = None, {}, False

    def reply(self, message) -> None:
        with self.lock:
            send(self.out, message)

    def start(self, path, observers, strict) -> None:
        try:
            self.worker = StoreWorker(path, observers, strict)
        except Exception as exc:
            self.failed = True
            self.reply(("failed", exc))

    def crashed(self) -> None:
        """The training process died without closing: the run crashed."""
        if self.worker is not None and not self.failed:
            try:
                self.worker.write([{"meta": {"status": schema.CRASHED,
                                             "end_time": time.time()}}])
            except Exception:
                pass

    def write(self, items, beat) -> None:
        if self.failed:
            return
        try:
            self.worker.write(_decode_items(items, self.names), beat=beat)
        except Exception as exc:
            self.failed = True
            self.reply(("failed", exc))
        if self.worker.pending_error is not None:
            err, self.worker.pending_error = self.worker.pending_error, None
            try:
                self.reply(("error", err))
            except Exception:  # an exception that does not pickle
                self.reply(("error", RuntimeError(repr(err))))

    def serve(self) -> None:
        """Handle messages until the parent closes the store or goes away."""
        while True:
            msg = receive(self.inp)
            if msg is None:
                self.crashed()
                return
            kind = msg[0]
            if kind == "names":
                self.names[msg[1]] = msg[2]
            elif kind == "write":
                self.write(msg[1], msg[2])
            elif kind == "sync":
                self.reply(("ack", msg[1]))
            elif kind == "close":
                if self.worker is not None:
                    self.worker.close()
                self.reply(("closed",))
                return


def main() -> None:
    """Child-process entry: serve one StoreWriter over stdin/stdout until it closes or dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is for the training process
    inp, out, lock = sys.stdin.buffer, sys.stdout.buffer, threading.Lock()
    sys.stdout = sys.stderr  # stray prints must not corrupt the frames
    root = logging.getLogger("avionics")
    root.addHandler(_ForwardLogs(out, lock))
    root.setLevel(logging.INFO)
    root.propagate = False
    first = receive(inp)
    if first is None:  # the parent could not send the set-up (it fell back to a thread)
        return
    _, path, observers, strict = first
    server = _Server(inp, out, lock)
    server.start(path, observers, strict)
    server.serve()


if __name__ == "__main__":
    main()
