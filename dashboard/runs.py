"""The runs under a log directory, and the only way a name from the browser becomes a path.

A run is named by its directory relative to the log directory, with ``/`` separators
(``"exp1"``, ``"sweep/lr-0.1"``; ``"."`` when the log directory is itself a run). A name is
accepted only if it is one of the runs found by walking the log directory, so a name such as
``../../etc`` or an absolute path can never reach the file system.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

from dashboard import settings
from instrument.store.errors import StoreError
from instrument.store.reader import Run, is_run_dir, load
from instrument.store.schema import STORE_FILE


class UnknownRunError(StoreError):
    """A run name that does not name a run inside the log directory."""


class RunCatalog:
    """Finds runs under ``logdir`` (re-scanned at most every ``ttl`` seconds) and opens them.

    Args:
        logdir: the directory holding run directories (or a run directory itself).
        ttl: seconds a scan is reused; new runs appear after at most this long.
        max_depth: levels below ``logdir`` searched for run directories.
    """

    def __init__(self, logdir: str, ttl: float = settings.RUN_LIST_TTL_S,
                 max_depth: int = settings.MAX_RUN_DEPTH):
        self.logdir = os.path.abspath(os.fspath(logdir))
        self.ttl = ttl
        self.max_depth = max_depth
        self._lock = threading.Lock()
        self._names: list = []
        self._scanned = -float("inf")

    def names(self) -> list:
        """Run names, sorted; a re-scan happens when the last one is older than ``ttl``."""
        with self._lock:
            if time.monotonic() - self._scanned > self.ttl:
                self._names = self._scan()
                self._scanned = time.monotonic()
            return list(self._names)

    def _scan(self) -> list:
        found = []
        if not os.path.isdir(self.logdir):
            return found
        root_depth = self.logdir.rstrip(os.sep).count(os.sep)
        for root, dirs, _ in os.walk(self.logdir):
            if is_run_dir(root):
                rel = os.path.relpath(root, self.logdir)
                found.append("." if rel == "." else rel.replace(os.sep, "/"))
            if root.count(os.sep) - root_depth >= self.max_depth:
                dirs[:] = []
            # hidden and cache directories never hold runs worth listing
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__")))
        return sorted(found)

    def path(self, name) -> str:
        """The directory of run ``name``.

        Raises:
            UnknownRunError: ``name`` is not a run found under the log directory.
        """
        if not isinstance(name, str) or name not in self.names():
            self._scanned = -float("inf")  # a run created a moment ago: look once more
            if not isinstance(name, str) or name not in self.names():
                raise UnknownRunError(
                    f"there is no run named {_shorten(name)!r} in {self.logdir}; pick one from "
                    "the run list (names are directories relative to the log directory)")
        path = os.path.realpath(os.path.join(self.logdir, *name.split("/")))
        root = os.path.realpath(self.logdir)
        if os.path.commonpath([path, root]) != root:  # a symlinked run pointing outside
            raise UnknownRunError(f"run {name!r} resolves outside {self.logdir}; refusing it")
        return path

    def open(self, name: str) -> Run:
        """The run ``name``, checked readable.

        Raises:
            StoreError: unknown name, or a store that is missing, empty, locked, corrupt,
                truncated or of a newer schema (the message says which and what to do).
        """
        # no whole-file integrity scan (seconds on a large store): damage surfaces as a
        # StoreCorruptError from the read that meets it, and is shown like any other error.
        # The remaining checks (header, schema version) cost about a millisecond, so they run
        # on every open: a store replaced or truncated meanwhile is caught at once.
        run = load(self.path(name), integrity=False)
        run.name = self.display_name(name)
        return run

    def display_name(self, name: str) -> str:
        """A short label for run ``name`` (the log directory's own name for ``"."``)."""
        return os.path.basename(self.logdir) if name == "." else name

    def latest(self, names=None) -> str | None:
        """The run (of ``names``, default all) whose store changed last, or None."""
        best, best_time = None, -float("inf")
        for name in self.names() if names is None else names:
            try:
                store = os.path.join(self.path(name), STORE_FILE)
            except StoreError:
                continue
            # in WAL mode new rows land in the -wal file first
            mtime = max((os.path.getmtime(p) for p in (store, store + "-wal")
                         if os.path.exists(p)), default=-float("inf"))
            if mtime > best_time:
                best, best_time = name, mtime
        return best

    def head(self, name: str, previous: dict | None = None) -> dict:
        """What the poll compares between ticks: first/last step, newest event id, number of
        series and status of run ``name``; ``{"error": message}`` if it cannot be read.

        Only events newer than ``previous["events"]`` are read, so a poll stays cheap.
        """
        with self.reading(name) as (run, error):
            if run is None:
                return {"error": error}
            try:
                first, last = run.step_range()
                known = (previous or {}).get("events") or 0
                newer = run.events(after_id=known)
                return {"first": first, "last": last, "series": len(run.keys()),
                        "events": int(newer["id"].max()) if len(newer) else known,
                        "status": run.meta.get("status")}
            except StoreError as exc:
                return {"error": str(exc)}

    @contextmanager
    def reading(self, name: str):
        """``(run, None)`` or ``(None, message)`` like :meth:`try_open`, with the run's reads
        inside the block sharing one connection and one catalogue read (one refresh)."""
        try:
            path = self.path(name)
        except StoreError as exc:
            yield None, str(exc)
            return
        run = Run(path)
        run.name = self.display_name(name)
        try:
            with run.session():
                run.check(integrity=False)
                yield run, None
        except StoreError as exc:
            yield None, str(exc)
        except OSError as exc:  # a directory removed or unreadable while we looked
            yield None, f"cannot read run {name!r}: {exc}"

    def try_open(self, name: str) -> tuple:
        """``(run, None)`` or ``(None, message)``; never raises for a bad run."""
        try:
            return self.open(name), None
        except StoreError as exc:
            return None, str(exc)
        except OSError as exc:  # a directory removed or unreadable while we looked
            return None, f"cannot read run {name!r}: {exc}"



def _shorten(name, limit: int = 120) -> str:
    """A name from the browser as it may appear in a message (it can be anything, or huge)."""
    text = str(name)
    return text if len(text) <= limit else text[:limit] + "..."
