"""Reading a run store from any process, while it is written or after. Imports no torch.

>>> run = load("runs/exp1")
>>> run.scalars()        # step, wall_time, key, value
>>> run.layers()         # step, layer, key, value
>>> run.events()         # step, code, severity, layer, message, evidence, suggestion, ...
>>> run.meta["status"]   # running / finished / crashed

Every call opens a short-lived read-only connection, so one :class:`Run` can serve many threads
(the dashboard) and never holds a read transaction that would starve the writer's checkpoints.

pandas is imported by the methods that return DataFrames, not by this module: the training
process imports it for run-directory helpers (:func:`store_path`, :func:`is_run_dir`) and must
not pay pandas' import time for them.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from instrument.store import schema
from instrument.store.errors import (
    RunNotFoundError,
    SchemaVersionError,
    StoreCorruptError,
    StoreError,
    StoreLockedError,
)

if TYPE_CHECKING:
    import pandas as pd

READ_BUSY_TIMEOUT_MS = 2000
"""How long a read waits for a lock before reporting the store as locked."""

_SQLITE_MAGIC = b"SQLite format 3\x00"


def store_path(run_dir: str) -> str:
    """The database file of the run in ``run_dir``."""
    return os.path.join(run_dir, schema.STORE_FILE)


def is_run_dir(path: str) -> bool:
    """True if ``path`` is a directory holding a run store."""
    return os.path.isfile(store_path(path))


def load(path: str, integrity: bool = True) -> Run:
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
    layers: list | None


class Run:
    """A run store opened for reading. See the module docstring for the main calls."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = store_path(run_dir)
        self.name = os.path.basename(os.path.normpath(run_dir))
        self._held = None        # the connection of an open session(), else None
        self._catalogue_rows = None  # the catalogue, read once per session()

    # ---- connection and errors ------------------------------------------------------------------
    @contextmanager
    def session(self):
        """Share one connection and one catalogue read among the reads inside the block.

        A reader that makes many small reads at once (one dashboard refresh: step range, keys,
        several series, events) would otherwise open a connection and decode the series
        catalogue for each. Statements still run in autocommit mode, each its own short read
        transaction, so a long session never holds back the writer's checkpoints; the catalogue
        is read again by the next session (a series created meanwhile shows up then). Nested
        sessions share the outer one.
        """
        if self._held is not None:
            yield self
            return
        with self._open() as conn:
            self._held = conn
            try:
                yield self
            finally:
                self._held, self._catalogue_rows = None, None

    @contextmanager
    def _connect(self):
        if self._held is None:
            with self._open() as conn:
                yield conn
            return
        try:
            yield self._held
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from exc

    @contextmanager
    def _open(self):
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
            if version < schema.OLDEST_READABLE_VERSION:
                raise SchemaVersionError(
                    f"{self.path} was written with store schema v{version}, a pre-release "
                    f"layout this avionics cannot read (it reads v"
                    f"{schema.OLDEST_READABLE_VERSION} to v{schema.SCHEMA_VERSION}); record the "
                    "run again.")
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
            if meta.get("steps") is None:  # written at close(): a live or killed run has
                last = conn.execute("SELECT MAX(step) FROM steps").fetchone()[0]  # none yet
                meta["steps"] = None if last is None else last + 1
        meta["status"] = _live_status(meta)
        meta.setdefault("name", self.name)
        return meta

    # ---- catalogue --------------------------------------------------------------------------
    def keys(self, kind: str | None = None) -> list:
        """Names of the recorded series, optionally only ``"scalar"`` or ``"layer"`` ones."""
        out = []
        for _, key, kd, names in self._catalogue():
            if kd == schema.SCALARS_KIND:
                out.extend(k for k in names if kind in (None, schema.SCALAR))
            elif kind in (None, kd):
                out.append(key)
        return out

    def layer_names(self, key: str) -> list:
        """The layers of layer series ``key``, in recording order."""
        loc = self._locate(key, schema.LAYER)
        if loc is None:
            raise KeyError(f"no layer series {key!r} in {self.run_dir}")
        return loc[1]

    def step_range(self) -> tuple:
        """``(first, last)`` logged step, or ``(None, None)`` for an empty run."""
        with self._connect() as conn:
            # two subqueries: SQLite answers a lone MIN or MAX from the index, but scans every
            # row for MIN and MAX in one SELECT (90 ms at 1e6 steps)
            return tuple(conn.execute("SELECT (SELECT MIN(step) FROM steps), "
                                      "(SELECT MAX(step) FROM steps)").fetchone())

    def last_step(self) -> int | None:
        """The last logged step, or None."""
        return self.step_range()[1]

    def _catalogue(self) -> list:
        if self._catalogue_rows is not None:
            return self._catalogue_rows
        with self._connect() as conn:
            rows = conn.execute("SELECT id, key, kind, layers FROM series ORDER BY id").fetchall()
        out = [(sid, key, kd, json.loads(layers) if layers else []) for sid, key, kd, layers
               in rows]
        if self._held is not None:
            self._catalogue_rows = out
        return out

    def _locate(self, key: str, kind: str) -> tuple | None:
        """``(series id, column names, column of key or None, dtype)`` of a series."""
        for sid, k, kd, names in self._catalogue():
            if kind == schema.SCALAR and kd == schema.SCALARS_KIND and key in names:
                return sid, names, names.index(key), schema.SCALAR_DTYPE
            if kind == schema.LAYER and kd == schema.LAYER and k == key:
                return sid, names, None, schema.LAYER_DTYPE
        return None

    # ---- tidy frames --------------------------------------------------------------------------
    def scalars(self, keys: Iterable[str] | None = None, start: int | None = None,
                stop: int | None = None) -> pd.DataFrame:
        """Scalar series as rows ``step, wall_time, key, value`` (steps in ``[start, stop]``)."""
        import pandas as pd

        keys = None if keys is None else set(keys)
        lo, hi = _bounds(start, stop)
        frames = []
        with self._connect() as conn:
            for sid, _, kd, names in self._catalogue():
                if kd != schema.SCALARS_KIND:
                    continue
                rows = conn.execute(
                    "SELECT p.step, s.wall_time, p.value FROM points p LEFT JOIN steps s "
                    "ON s.step = p.step WHERE p.series = ? AND p.step BETWEEN ? AND ? "
                    "ORDER BY p.step", (sid, lo, hi)).fetchall()
                if not rows:
                    continue
                steps = np.asarray([r[0] for r in rows], dtype=np.int64)
                wall = np.asarray([r[1] for r in rows], dtype=np.float64)
                mat = _matrix([r[2] for r in rows], len(names), schema.SCALAR_DTYPE)
                for col, key in enumerate(names):
                    if keys is not None and key not in keys:
                        continue
                    have = ~np.isnan(mat[:, col])
                    frames.append(pd.DataFrame({"step": steps[have], "wall_time": wall[have],
                                                "key": key, "value": mat[have, col]}))
        cols = ["step", "wall_time", "key", "value"]
        if not frames:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                                 zip(cols, ("int64", "float64", "object", "float64"))})
        return pd.concat(frames, ignore_index=True).sort_values(["step", "key"],
                                                                ignore_index=True)

    def layers(self, keys: Iterable[str] | None = None,
               layers: Iterable[str] | None = None, start: int | None = None,
               stop: int | None = None, dropna: bool = False) -> pd.DataFrame:
        """Layer series as rows ``step, layer, key, value``.

        A NaN value means the layer was not recorded at that step (a module not called, a
        parameter without gradient); ``dropna=True`` leaves those rows out.
        """
        import pandas as pd

        keys = None if keys is None else set(keys)
        want = None if layers is None else set(layers)
        frames = []
        lo, hi = _bounds(start, stop)
        with self._connect() as conn:
            for sid, key, kd, names in self._catalogue():
                if kd != schema.LAYER or (keys is not None and key not in keys):
                    continue
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

    def events(self, codes: Iterable[str] | None = None, start: int | None = None,
               stop: int | None = None, after_id: int | None = None) -> pd.DataFrame:
        """Events as rows ``id, step, wall_time, code, severity, layer, message, evidence,
        suggestion, rank``; ``evidence`` is a dict or None. ``after_id`` reads only newer rows."""
        import pandas as pd

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
        df["evidence"] = [json.loads(e) if isinstance(e, str) and e else None
                          for e in df["evidence"]]  # a missing one may read as NaN
        df["step"] = df["step"].astype("Int64")
        return df

    # ---- views for the dashboard ---------------------------------------------------------------
    def series(self, key: str, kind: str = schema.SCALAR, start: int | None = None,
               stop: int | None = None, max_points: int = 2000,
               layers: Sequence[str] | None = None) -> Downsampled | None:
        """Series ``key`` over ``[start, stop]`` with about ``max_points`` rows at most.

        Reads the coarsest needed level of the downsampling pyramid, so the cost does not grow
        with the run's length; the part of the range that the level has not closed yet is
        covered by finer levels and raw points. Returns None if there is no data in the range.
        """
        loc = self._locate(key, kind)
        if loc is None:
            return None
        sid, names, col, dtype = loc
        width = len(names)
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
            rows, raw = self._compose(conn, sid, level, start, stop)
        if not rows and not raw:
            return None
        raw_steps = np.asarray([r[0] for r in raw], dtype=np.int64)
        raw_values = _matrix([r[1] for r in raw], width, dtype)
        first = np.concatenate([np.asarray([r[0] for r in rows], dtype=np.int64), raw_steps])
        step = np.concatenate([np.asarray([r[1] for r in rows], dtype=np.int64), raw_steps])
        count = np.vstack([_matrix([r[2] for r in rows], width, schema.LAYER_DTYPE),
                           (~np.isnan(raw_values)).astype(np.float64)])
        mean = np.vstack([_matrix([r[3] for r in rows], width, dtype), raw_values])
        mn = np.vstack([_matrix([r[4] for r in rows], width, dtype), raw_values])
        mx = np.vstack([_matrix([r[5] for r in rows], width, dtype), raw_values])
        if col is not None:  # one scalar: keep the rows where it was recorded
            have = count[:, col] > 0
            return Downsampled(key, level, step[have], first[have],
                               count[have, col].astype(np.int64), mean[have, col],
                               mn[have, col], mx[have, col], None)
        if layers is not None:
            pos = {n: i for i, n in enumerate(names)}
            cols = [pos[n] for n in layers if n in pos]
            names = [names[i] for i in cols]
            count, mean, mn, mx = count[:, cols], mean[:, cols], mn[:, cols], mx[:, cols]
        return Downsampled(key, level, step, first, count.astype(np.int64), mean, mn, mx,
                           names)

    @staticmethod
    def _compose(conn, sid, level, start, stop) -> tuple:
        """Bucket rows ``(first, last, count, mean, min, max)`` covering ``[start, stop]`` (closed
        buckets of ``level``, then of each finer level after them) and the raw ``(step, value)``
        rows after those."""
        rows, lo = [], start
        for lv in range(level, 0, -1):
            size = schema.PYRAMID_BASE**lv
            got = conn.execute(
                "SELECT first_step, last_step, count, mean, min, max, bucket FROM buckets "
                "WHERE series = ? AND level = ? AND bucket BETWEEN ? AND ? ORDER BY bucket",
                (sid, lv, lo // size, stop // size)).fetchall()
            if got:
                rows.extend(r[:6] for r in got)
                lo = (got[-1][6] + 1) * size
        raw = conn.execute("SELECT step, value FROM points WHERE series = ? AND step BETWEEN ? "
                           "AND ? ORDER BY step", (sid, lo, stop)).fetchall()
        return rows, raw

    def _pick_level(self, conn, sid, start, stop, max_points) -> int:
        base = schema.PYRAMID_BASE
        span = max(stop - start + 1, 1)
        # closed buckets of a level plus at most (base - 1) rows per finer level for the tail
        fits = lambda lv, rows: rows + base * (lv + 1) <= max_points  # noqa: E731
        level = 0
        while level < schema.PYRAMID_LEVELS and not fits(level, span // base**level + 2):
            level += 1
        while level > 0:  # sparse series: a finer level may still fit
            finer = level - 1
            if finer == 0:
                sql = ("SELECT COUNT(*) FROM (SELECT 1 FROM points WHERE series = ? AND step "
                       "BETWEEN ? AND ? LIMIT ?)")
                args = (sid, start, stop, max_points + 1)
            else:
                size = base**finer
                sql = ("SELECT COUNT(*) FROM (SELECT 1 FROM buckets WHERE series = ? AND level = ? "
                       "AND bucket BETWEEN ? AND ? LIMIT ?)")
                args = (sid, finer, start // size, stop // size, max_points + 1)
            if not fits(finer, conn.execute(sql, args).fetchone()[0]):
                break
            level = finer
        return level

    def points_after(self, key: str, kind: str = schema.SCALAR, after_step: int = -1,
                     limit: int = 10000) -> tuple:
        """Raw rows with ``step > after_step`` (a live cursor): ``(steps, values)``; for a
        scalar, only the steps where it was recorded."""
        loc = self._locate(key, kind)
        if loc is None:
            return np.zeros(0, dtype=np.int64), np.zeros((0,))
        sid, names, col, dtype = loc
        with self._connect() as conn:
            rows = conn.execute("SELECT step, value FROM points WHERE series = ? AND step > ? "
                                "ORDER BY step LIMIT ?", (sid, after_step, limit)).fetchall()
        steps = np.asarray([r[0] for r in rows], dtype=np.int64)
        mat = _matrix([r[1] for r in rows], len(names), dtype)
        if col is None:
            return steps, mat
        have = ~np.isnan(mat[:, col])
        return steps[have], mat[have, col]

    def at_step(self, key: str, step: int) -> tuple | None:
        """Layer series ``key`` at the last recorded step ``<= step``: ``(step, layers, values)``."""
        loc = self._locate(key, schema.LAYER)
        if loc is None:
            return None
        sid, names, _, _ = loc
        with self._connect() as conn:
            row = conn.execute("SELECT step, value FROM points WHERE series = ? AND step <= ? "
                               "ORDER BY step DESC LIMIT 1", (sid, step)).fetchone()
        if row is None:
            return None
        return row[0], names, _matrix([row[1]], len(names), schema.LAYER_DTYPE)[0]

    def step_walls(self, steps: Iterable[int]) -> tuple:
        """The rows of the ``steps`` table bracketing each of ``steps`` (the last logged step at
        or before it, the first at or after it): ``(steps, wall times)``, increasing.

        Interpolating a step's wall time on these rows gives what interpolating on the whole
        table would, for two index seeks per step instead of a read of every logged step (the
        dashboard's wall-time axis maps at most a few thousand plotted steps).
        """
        want = sorted({int(s) for s in steps})
        found: dict = {}
        with self._connect() as conn:
            for i in range(0, len(want), 400):
                chunk = want[i:i + 400]
                values = ",".join(["(?)"] * len(chunk))
                for agg, op in (("MAX", "<="), ("MIN", ">=")):
                    found.update(conn.execute(
                        f"WITH q(s) AS (VALUES {values}) SELECT st.step, st.wall_time FROM q "
                        f"JOIN steps st ON st.step = (SELECT {agg}(step) FROM steps WHERE step "
                        f"{op} q.s)", chunk).fetchall())
        keys = sorted(found)
        return (np.asarray(keys, dtype=np.int64),
                np.asarray([found[k] for k in keys], dtype=np.float64))


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
