"""Reading a run store from any process, while it is written or after. Imports no torch.

>>> run = load("runs/exp1")
>>> run.scalars()        # step, wall_time, key, value
>>> run.layers()         # step, layer, key, value
>>> run.events()         # step, code, severity, layer, message, evidence, suggestion, ...
>>> run.meta["status"]   # running / finished / crashed

Every call opens a short-lived read-only connection, so one :class:`Run` can serve many threads
(the dashboard) and never holds a read transaction that would starve the writer's checkpoints.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from instrument.store import schema
from instrument.store.errors import (RunNotFoundError, SchemaVersionError, StoreCorruptError,
                                     StoreError, StoreLockedError)

READ_BUSY_TIMEOUT_MS = 2000
"""How long a read waits for a lock before reporting the store as locked."""

_SQLITE_MAGIC = b"SQLite format 3\x00"


def store_path(run_dir: str) -> str:
    """The database file of the run in ``run_dir``."""
    return os.path.join(run_dir, schema.STORE_FILE)


def is_run_dir(path: str) -> bool:
    """True if ``path`` is a directory holding a run store."""
    return os.path.isfile(store_path(path))


def load(path: str, integrity: bool = True) -> "Run":
    """Open the run stored in directory ``path`` (or its ``avionics.db`` file) for reading.

    Args:
        path: the run directory or its store file.
        integrity: also run SQLite's ``quick_check``, which reads the whole file (seconds on a
            multi-GB store). Readers that open runs often (the dashboard) pass False: damage is
            then reported as :class:`StoreCorruptError` by the read that meets it.

    Raises:
        RunNotFoundError: there is no store there.
        StoreCorruptError, StoreLockedError, SchemaVersionError: see :mod:`.errors`.
    """
    path = os.fspath(path)
    if os.path.basename(path) == schema.STORE_FILE and os.path.isfile(path):
        path = os.path.dirname(path) or "."
    run = Run(path)
    run.check(integrity)
    return run


@dataclass
class Downsampled:
    """A series over a step range at a resolution of at most ``max_points`` rows.

    ``level`` 0 holds raw values (then ``min == max == mean``); level ``L`` aggregates buckets
    of ``PYRAMID_BASE**L`` steps. ``step`` is the last step in each bucket. For layer series
    the value arrays are ``[rows, layers]``, for scalars ``[rows]``.
    """

    key: str
    level: int
    step: np.ndarray
    first_step: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    layers: Optional[list]


class Run:
    """A run store opened for reading. See the module docstring for the main calls."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = store_path(run_dir)
        self.name = os.path.basename(os.path.normpath(run_dir))

    # ---- connection and errors ------------------------------------------------------------------
    @contextmanager
    def _connect(self):
        if not os.path.exists(self.path):
            if os.path.isfile(self.run_dir):
                raise RunNotFoundError(f"{self.run_dir} is a file, not a run directory")
            raise RunNotFoundError(
                f"no avionics run at {self.run_dir}: expected the store file {self.path}. "
                "Runs are the directories that instrument.watch(run=...) creates.")
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={READ_BUSY_TIMEOUT_MS}")
            yield conn
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc
        finally:
            conn.close()

    def check(self, integrity: bool = True) -> None:
        """Raise a :class:`StoreError` unless this is a readable store of a known schema.

        ``integrity=False`` skips SQLite's whole-file ``quick_check`` (see :func:`load`).
        """
        if not os.path.isfile(self.path):
            with self._connect():  # raises RunNotFoundError with the explanation
                pass
        with open(self.path, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if len(head) == 0:
            raise StoreCorruptError(f"{self.path} is empty: the file holds no database "
                                    "(was it truncated or created by something else?)")
        if head != _SQLITE_MAGIC:
            raise StoreCorruptError(f"{self.path} is not an SQLite database; it may be corrupt "
                                    "or not an avionics store")
        with self._connect() as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "schema" not in tables:
                raise StoreCorruptError(f"{self.path} is an SQLite file but not an avionics "
                                        "store (it has no schema table)")
            row = conn.execute("SELECT MAX(version) FROM schema").fetchone()
            version = row[0] if row else None
            if version is None:
                raise StoreCorruptError(f"{self.path} has an empty schema table")
            if version > schema.SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} was written with store schema v{version}, but this avionics "
                    f"reads up to v{schema.SCHEMA_VERSION}. Upgrade avionics to read it.")
            if integrity:
                found = conn.execute("PRAGMA quick_check(1)").fetchone()
                if found is None or found[0] != "ok":  # problems come back as rows, not errors
                    raise StoreCorruptError(f"{self.path} is damaged (SQLite integrity check: "
                                            f"{found[0] if found else 'no result'}); restore it "
                                            "from a copy or record the run again")

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        """Run metadata; ``status`` reads ``crashed`` once a running writer's heartbeat stops."""
        with self._connect() as conn:
            meta = {k: json.loads(v) for k, v in conn.execute("SELECT key, value FROM meta")}
        meta["status"] = _live_status(meta)
        meta.setdefault("name", self.name)
        return meta

    # ---- catalogue --------------------------------------------------------------------------
    def keys(self, kind: Optional[str] = None) -> list:
        """Names of the recorded series, optionally only ``"scalar"`` or ``"layer"`` ones."""
        with self._connect() as conn:
            rows = conn.execute("SELECT key, kind FROM series ORDER BY id").fetchall()
        return [k for k, kd in rows if kind is None or kd == kind]

    def layer_names(self, key: str) -> list:
        """The layers of layer series ``key``, in recording order."""
        info = self._series_info([key], schema.LAYER)
        if not info:
            raise KeyError(f"no layer series {key!r} in {self.run_dir}")
        return info[0][3]

    def step_range(self) -> tuple:
        """``(first, last)`` logged step, or ``(None, None)`` for an empty run."""
        with self._connect() as conn:
            # two subqueries: SQLite answers a lone MIN or MAX from the index, but scans every
            # row for MIN and MAX in one SELECT (90 ms at 1e6 steps)
            return tuple(conn.execute("SELECT (SELECT MIN(step) FROM steps), "
                                      "(SELECT MAX(step) FROM steps)").fetchone())

    def last_step(self) -> Optional[int]:
        """The last logged step, or None."""
        return self.step_range()[1]

    def _series_info(self, keys, kind) -> list:
        with self._connect() as conn:
            rows = conn.execute("SELECT id, key, kind, layers FROM series").fetchall()
        out = []
        for sid, key, kd, layers in rows:
            if kd != kind or (keys is not None and key not in keys):
                continue
            out.append((sid, key, kd, json.loads(layers) if layers else None))
        return out

    # ---- tidy frames --------------------------------------------------------------------------
    def scalars(self, keys: Optional[Iterable[str]] = None, start: Optional[int] = None,
                stop: Optional[int] = None) -> pd.DataFrame:
        """Scalar series as rows ``step, wall_time, key, value`` (steps in ``[start, stop]``)."""
        keys = None if keys is None else set(keys)
        frames = []
        lo, hi = _bounds(start, stop)
        with self._connect() as conn:
            for sid, key, _, _ in self._series_info(keys, schema.SCALAR):
                rows = conn.execute(
                    "SELECT p.step, s.wall_time, p.value FROM points p LEFT JOIN steps s "
                    "ON s.step = p.step WHERE p.series = ? AND p.step BETWEEN ? AND ? "
                    "ORDER BY p.step", (sid, lo, hi)).fetchall()
                if not rows:
                    continue
                step, wall, blobs = zip(*rows)
                frames.append(pd.DataFrame({
                    "step": np.asarray(step, dtype=np.int64),
                    "wall_time": np.asarray(wall, dtype=np.float64),
                    "key": key,
                    "value": np.frombuffer(b"".join(blobs), schema.SCALAR_DTYPE).astype(np.float64),
                }))
        cols = ["step", "wall_time", "key", "value"]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(cols, ("int64", "float64", "object", "float64"))})
        return pd.concat(frames, ignore_index=True).sort_values(["step", "key"],
                                                                ignore_index=True)

    def layers(self, keys: Optional[Iterable[str]] = None,
               layers: Optional[Iterable[str]] = None, start: Optional[int] = None,
               stop: Optional[int] = None, dropna: bool = False) -> pd.DataFrame:
        """Layer series as rows ``step, layer, key, value``.

        A NaN value means the layer was not recorded at that step (a module not called, a
        parameter without gradient); ``dropna=True`` leaves those rows out.
        """
        keys = None if keys is None else set(keys)
        want = None if layers is None else set(layers)
        frames = []
        lo, hi = _bounds(start, stop)
        with self._connect() as conn:
            for sid, key, _, names in self._series_info(keys, schema.LAYER):
                rows = conn.execute(
                    "SELECT step, value FROM points WHERE series = ? AND step BETWEEN ? AND ? "
                    "ORDER BY step", (sid, lo, hi)).fetchall()
                if not rows:
                    continue
                steps = np.asarray([r[0] for r in rows], dtype=np.int64)
                mat = _matrix([r[1] for r in rows], len(names), schema.LAYER_DTYPE)
                cols = np.arange(len(names)) if want is None else np.asarray(
                    [i for i, n in enumerate(names) if n in want], dtype=np.int64)
                if cols.size == 0:
                    continue
                sub = mat[:, cols]
                frames.append(pd.DataFrame({
                    "step": np.repeat(steps, cols.size),
                    "layer": np.tile(np.asarray(names, dtype=object)[cols], len(steps)),
                    "key": key,
                    "value": sub.reshape(-1).astype(np.float64),
                }))
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(("step", "layer", "key", "value"),
                                     ("int64", "object", "object", "float64"))})
        df = pd.concat(frames, ignore_index=True)
        if dropna:
            df = df[df["value"].notna()].reset_index(drop=True)
        return df

    def events(self, codes: Optional[Iterable[str]] = None, start: Optional[int] = None,
               stop: Optional[int] = None, after_id: Optional[int] = None) -> pd.DataFrame:
        """Events as rows ``id, step, wall_time, code, severity, layer, message, evidence,
        suggestion, rank``; ``evidence`` is a dict or None. ``after_id`` reads only newer rows."""
        lo, hi = _bounds(start, stop)
        sql = ("SELECT id, step, wall_time, code, severity, layer, message, evidence, suggestion, "
               "rank FROM events WHERE id > ? AND (step IS NULL OR step BETWEEN ? AND ?)")
        args = [after_id if after_id is not None else -1, lo, hi]
        if codes is not None:
            codes = list(codes)
            sql += f" AND code IN ({','.join('?' * len(codes))})"
            args += codes
        with self._connect() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        cols = ["id", "step", "wall_time", "code", "severity", "layer", "message", "evidence",
                "suggestion", "rank"]
        df = pd.DataFrame(rows, columns=cols)
        df["evidence"] = [json.loads(e) if e else None for e in df["evidence"]]
        df["step"] = df["step"].astype("Int64")
        return df

    # ---- views for the dashboard ---------------------------------------------------------------
    def series(self, key: str, kind: str = schema.SCALAR, start: Optional[int] = None,
               stop: Optional[int] = None, max_points: int = 2000,
               layers: Optional[Sequence[str]] = None) -> Optional[Downsampled]:
        """Series ``key`` over ``[start, stop]`` with at most ``max_points`` rows.

        Picks the finest pyramid level that fits, so the cost does not grow with the run's
        length. Returns None if the series does not exist or has no rows in the range.
        """
        info = self._series_info([key], kind)
        if not info:
            return None
        sid, _, _, names = info[0]
        width = len(names) if names else 1
        with self._connect() as conn:
            if start is None or stop is None:
                lo, hi = conn.execute(
                    "SELECT (SELECT MIN(step) FROM points WHERE series = ?), "
                    "(SELECT MAX(step) FROM points WHERE series = ?)", (sid, sid)).fetchone()
                if lo is None:
                    return None
                start = lo if start is None else start
                stop = hi if stop is None else stop
            level = self._pick_level(conn, sid, start, stop, max_points)
            dtype = schema.SCALAR_DTYPE if kind == schema.SCALAR else schema.LAYER_DTYPE
            if level == 0:
                rows = conn.execute(
                    "SELECT step, value FROM points WHERE series = ? AND step BETWEEN ? AND ? "
                    "ORDER BY step", (sid, start, stop)).fetchall()
                if not rows:
                    return None
                step = np.asarray([r[0] for r in rows], dtype=np.int64)
                mean = _matrix([r[1] for r in rows], width, dtype)
                mn = mx = mean
                first, count = step, np.ones(len(step), dtype=np.int64)
            else:
                size = schema.PYRAMID_BASE**level
                rows = conn.execute(
                    "SELECT first_step, last_step, n, mean, min, max FROM buckets WHERE series = ? "
                    "AND level = ? AND bucket BETWEEN ? AND ? ORDER BY bucket",
                    (sid, level, start // size, stop // size)).fetchall()
                if not rows:
                    return None
                first = np.asarray([r[0] for r in rows], dtype=np.int64)
                step = np.asarray([r[1] for r in rows], dtype=np.int64)
                count = np.asarray([r[2] for r in rows], dtype=np.int64)
                mean = _matrix([r[3] for r in rows], width, dtype)
                mn = _matrix([r[4] for r in rows], width, dtype)
                mx = _matrix([r[5] for r in rows], width, dtype)
        cols = None
        if names is not None and layers is not None:
            pos = {n: i for i, n in enumerate(names)}
            cols = [pos[n] for n in layers if n in pos]
            names = [names[i] for i in cols]
        if names is None:
            mean, mn, mx = mean[:, 0], mn[:, 0], mx[:, 0]
        elif cols is not None:
            mean, mn, mx = mean[:, cols], mn[:, cols], mx[:, cols]
        return Downsampled(key, level, step, first, count, mean, mn, mx, names)

    def _pick_level(self, conn, sid, start, stop, max_points) -> int:
        span = max(stop - start + 1, 1)
        level = 0
        while level < schema.PYRAMID_LEVELS and span // schema.PYRAMID_BASE**level + 2 > max_points:
            level += 1
        while level > 0:  # sparse series: a finer level may still fit
            finer = level - 1
            if finer == 0:
                sql = ("SELECT COUNT(*) FROM (SELECT 1 FROM points WHERE series = ? AND step "
                       "BETWEEN ? AND ? LIMIT ?)")
                args = (sid, start, stop, max_points + 1)
            else:
                size = schema.PYRAMID_BASE**finer
                sql = ("SELECT COUNT(*) FROM (SELECT 1 FROM buckets WHERE series = ? AND level = ? "
                       "AND bucket BETWEEN ? AND ? LIMIT ?)")
                args = (sid, finer, start // size, stop // size, max_points + 1)
            if conn.execute(sql, args).fetchone()[0] > max_points:
                break
            level = finer
        return level

    def points_after(self, key: str, kind: str = schema.SCALAR, after_step: int = -1,
                     limit: int = 10000) -> tuple:
        """Raw rows with ``step > after_step`` (a live cursor): ``(steps, values)``."""
        info = self._series_info([key], kind)
        if not info:
            return np.zeros(0, dtype=np.int64), np.zeros((0,))
        sid, _, _, names = info[0]
        width = len(names) if names else 1
        dtype = schema.SCALAR_DTYPE if kind == schema.SCALAR else schema.LAYER_DTYPE
        with self._connect() as conn:
            rows = conn.execute("SELECT step, value FROM points WHERE series = ? AND step > ? "
                                "ORDER BY step LIMIT ?", (sid, after_step, limit)).fetchall()
        steps = np.asarray([r[0] for r in rows], dtype=np.int64)
        mat = _matrix([r[1] for r in rows], width, dtype)
        return steps, (mat[:, 0] if names is None else mat)

    def at_step(self, key: str, step: int) -> Optional[tuple]:
        """Layer series ``key`` at the last recorded step ``<= step``: ``(step, layers, values)``."""
        info = self._series_info([key], schema.LAYER)
        if not info:
            return None
        sid, _, _, names = info[0]
        with self._connect() as conn:
            row = conn.execute("SELECT step, value FROM points WHERE series = ? AND step <= ? "
                               "ORDER BY step DESC LIMIT 1", (sid, step)).fetchone()
        if row is None:
            return None
        return row[0], names, _matrix([row[1]], len(names), schema.LAYER_DTYPE)[0]


# ---- helpers ------------------------------------------------------------------------------------
def _bounds(start, stop) -> tuple:
    return (-(2**62) if start is None else int(start), 2**62 if stop is None else int(stop))


def _matrix(blobs: list, width: int, dtype: str) -> np.ndarray:
    """Decode value blobs into a float64 ``[rows, width]`` matrix, NaN-padding short rows."""
    if not blobs:
        return np.zeros((0, width))
    itemsize = np.dtype(dtype).itemsize
    if all(len(b) == width * itemsize for b in blobs):
        return np.frombuffer(b"".join(blobs), dtype).reshape(len(blobs), width).astype(np.float64)
    out = np.full((len(blobs), width), np.nan)
    for i, b in enumerate(blobs):
        v = np.frombuffer(b, dtype)
        out[i, : len(v)] = v
    return out


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreLockedError(f"{path} is locked by another process ({exc}); try again later")
    if "no such table" in text or "no such column" in text:
        return StoreCorruptError(f"{path} is not an avionics store of a known layout ({exc})")
    if isinstance(exc, sqlite3.DatabaseError):
        return StoreCorruptError(f"{path} is corrupt or truncated ({exc})")
    return StoreError(f"cannot read {path}: {exc}")


def _live_status(meta: dict) -> str:
    status = meta.get("status", schema.RUNNING)
    if status != schema.RUNNING:
        return status
    age = time.time() - float(meta.get("heartbeat", 0.0))
    if age > schema.HEARTBEAT_STALE_S:
        return schema.CRASHED
    host = meta.get("host", {})
    if (isinstance(host, dict) and host.get("hostname") == socket.gethostname()
            and age > 2 * schema.HEARTBEAT_INTERVAL_S and not _pid_alive(host.get("pid"))):
        return schema.CRASHED
    return status


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
