"""The store writer, on the training process's side: all disk I/O leaves the training thread.

The training thread only calls :meth:`StoreWriter.submit`, which appends an item to a deque
without waking anyone (no lock hand-off, no GIL ping-pong per step). Items are
:class:`StepData`, :class:`Event`, ``{"meta": {...}}`` updates, or records with a
``materialize()`` method returning ``(list[StepData], list[Event])``: the torch side uses the
latter so that waiting for a device-to-host copy and decoding happen off the training thread.

Every ``flush_interval`` seconds the writer thread materializes what it has and hands the plain
records to a :class:`~instrument.store.worker.StoreWorker`:

* by default in a **child process** (``python -m instrument.store``, fed through a pipe),
  so the SQLite writes, the downsampling pyramid and the diagnosis rules (observers) never hold
  the training process's GIL. If the training process dies, the child sees the pipe close,
  writes what it received and marks the run crashed;
* or **on the writer thread** itself (``mode="thread"``, or when a child cannot be started).

Either way a killed process leaves everything up to about one flush interval behind it.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

from instrument.store import schema
from instrument.store.records import Event, StepData
from instrument.store.worker import Observer, StoreWorker, create_store, receive, send

log = logging.getLogger("avionics")

MODE_ENV = "AVIONICS_STORE_WORKER"
"""Set to ``thread`` to keep the store worker in the training process (no child process)."""

CLOSE_TIMEOUT_S = 120.0

_CLOSE = object()


class _Barrier:
    def __init__(self):
        self.done = threading.Event()


class StoreWriter:
    """Owns one run's store; see the module docstring.

    Args:
        path: the database file (created here, synchronously, with its tables and ``meta``).
        meta: initial metadata; ``status`` becomes ``running``.
        flush_interval: seconds between transactions (the crash-loss window).
        observers: callables run on each step's data (picklable, for the child process).
        strict: re-raise errors of the writer on the training thread (tests) instead of
            stopping with one warning.
        mode: ``"process"`` (default) or ``"thread"``; see the module docstring.
    """

    def __init__(self, path: str, meta: dict, *, flush_interval: float = 0.5,
                 observers: Iterable[Observer] = (), strict: bool = False,
                 mode: str | None = None):
        self.path = path
        self.flush_interval = flush_interval
        self.strict = strict
        self._queue: deque = deque()  # append/popleft are atomic: no lock on the hot path
        self._wake = threading.Event()  # set only by flush() and close()
        self._error: BaseException | None = None
        self._failed = False
        self._closed = False
        self.wakeups = 0  # rounds of the writer thread's loop (it must sleep between them)
        create_store(path, {**meta, "status": schema.RUNNING, "heartbeat": time.time()})
        mode = mode or os.environ.get(MODE_ENV, "process")
        self._sink = _open_sink(mode, path, list(observers), strict, self)
        self.mode = self._sink.mode
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
        """Write what is queued, set the final status and stop the thread (and child)."""
        if self._closed:
            return
        self._closed = True
        self._queue.append({"meta": {"status": status, "end_time": time.time(), **meta}})
        self._queue.append(_CLOSE)
        self._wake.set()
        self._thread.join(timeout=CLOSE_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("avionics: the store writer did not finish within %d s; %s may lack "
                        "the last steps", CLOSE_TIMEOUT_S, self.path)
        self._raise_pending()

    @property
    def alive(self) -> bool:
        """False once the writer has stopped (closed or failed)."""
        return not self._failed and not self._closed

    def _raise_pending(self) -> None:
        if self.strict and self._error is not None:
            err, self._error = self._error, None
            raise err

    # ---- called by sinks (any thread) -------------------------------------------------------
    def _fail(self, exc: BaseException) -> None:
        if not self._failed:
            log.warning("avionics: cannot write the run store %s (%s: %s). Recording has "
                        "stopped; training continues.", self.path, type(exc).__name__, exc)
        self._failed = True
        self._error = exc

    def _report(self, exc: BaseException) -> None:
        if self.strict:
            self._error = exc

    # ---- writer-thread side -----------------------------------------------------------------
    def _run(self) -> None:
        pending, barriers = [], []
        next_flush = time.monotonic() + self.flush_interval
        next_beat = 0.0
        closing = False
        while not closing:
            wait = max(0.0, min(next_flush, next_beat) - time.monotonic())
            self.wakeups += 1
            for item in self._take(wait):
                if item is _CLOSE:
                    closing = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    pending.append(item)
            now = time.monotonic()
            beat = now >= next_beat
            if not self._failed and (pending and (now >= next_flush or closing or barriers)
                                     or beat):
                self._sink.write(self._materialize(pending), beat)
                pending = []
                next_flush = now + self.flush_interval
                if beat:
                    next_beat = now + schema.HEARTBEAT_INTERVAL_S
            if self._failed:
                # nothing is written any more, heartbeats included: a deadline left in the
                # past would make the wait 0 and the thread spin until close(), taking a core
                # and the GIL from training
                pending = []
                next_beat = now + schema.HEARTBEAT_INTERVAL_S
            if not pending and next_flush <= now:
                # idle: look again one interval later (a past deadline would make the wait 0
                # and the thread spin, taking a core and the GIL from training)
                next_flush = now + self.flush_interval
            if barriers:
                self._sink.sync()
                for b in barriers:
                    b.done.set()
                barriers = []
        self._sink.close()

    def _take(self, wait: float) -> list:
        if wait > 0:
            self._wake.wait(wait)
        self._wake.clear()
        items = []
        while self._queue:
            items.append(self._queue.popleft())
        return items

    def _materialize(self, items: list) -> list:
        out = []
        for item in items:
            if isinstance(item, (StepData, Event, dict)):
                out.append(item)
                continue
            try:
                data, evs = item.materialize()
            except Exception as exc:  # last resort; records guard their own instruments
                self._report(exc)
                log.warning("avionics: dropped one step record: %s: %s", type(exc).__name__,
                            exc)
                continue
            out.extend(data)
            out.extend(evs)
        return out


def _open_sink(mode: str, path: str, observers: list, strict: bool, writer: StoreWriter):
    if mode not in ("process", "thread"):
        raise ValueError(f"store writer mode must be 'process' or 'thread', got {mode!r}")
    if mode == "process":
        try:
            return _ProcessSink(path, observers, strict, writer)
        except Exception as exc:  # fall back, never fail training over where we write
            if strict:
                raise
            log.warning("avionics: could not start the store worker process (%s: %s); "
                        "writing from a thread of this process instead", type(exc).__name__,
                        exc)
    return _ThreadSink(path, observers, strict, writer)


class _ThreadSink:
    """The worker on the writer thread."""

    mode = "thread"

    def __init__(self, path, observers, strict, writer):
        self.writer = writer
        try:
            self.worker = StoreWorker(path, observers, strict)
        except Exception as exc:
            self.worker = None
            writer._fail(exc)

    def write(self, items: list, beat: bool) -> None:
        if self.worker is None:
            return
        try:
            self.worker.write(items, beat)
        except Exception as exc:
            self.writer._fail(exc)
        if self.worker.pending_error is not None:
            err, self.worker.pending_error = self.worker.pending_error, None
            self.writer._report(err)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


class _ProcessSink:
    """The worker in a child process, fed through its stdin; replies come on its stdout."""

    mode = "process"

    def __init__(self, path, observers, strict, writer):
        self.writer = writer
        init = ("init", path, observers, strict)
        pickle.dumps(init, protocol=pickle.HIGHEST_PROTOCOL)  # fail here, before a child starts
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)  # the child imports this very copy of the package
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, "-m", "instrument.store"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                     close_fds=True)
        self._tokens = itertools.count()
        self._names: dict = {}  # id(list) -> (token, list): each name list crosses once
        self._acks: dict = {}
        self._ack_lock = threading.Lock()
        self._closed = threading.Event()
        send(self.proc.stdin, init)
        self._reader = threading.Thread(target=self._read, name="avionics-writer-replies",
                                        daemon=True)
        self._reader.start()

    def _send(self, message) -> bool:
        try:
            send(self.proc.stdin, message)
            return True
        except (BrokenPipeError, OSError, ValueError) as exc:
            self.writer._fail(RuntimeError(f"the store worker process exited ({exc})"))
            return False

    def write(self, items: list, beat: bool) -> None:
        wire = []
        for item in items:
            if isinstance(item, StepData):
                layers = {}
                for key, lv in item.layers.items():
                    entry = self._names.get(id(lv.layers))
                    if entry is None or entry[1] is not lv.layers:
                        entry = self._names[id(lv.layers)] = (next(self._tokens), lv.layers)
                        if not self._send(("names", entry[0], list(lv.layers))):
                            return
                    layers[key] = (entry[0], lv.values)
                wire.append(("step", item.step, item.wall_time, item.scalars, layers))
            else:
                wire.append(item)
        self._send(("write", wire, beat))

    def sync(self, timeout: float = 60.0) -> None:
        token = next(self._tokens)
        done = threading.Event()
        with self._ack_lock:
            self._acks[token] = done
        if self._send(("sync", token)):
            done.wait(timeout)

    def close(self) -> None:
        if self._send(("close",)):
            self._closed.wait(CLOSE_TIMEOUT_S)
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _read(self) -> None:
        """Replies of the child: acknowledgements, forwarded log lines, errors."""
        while True:
            try:
                msg = receive(self.proc.stdout)
            except Exception:
                msg = None
            if msg is None:
                if not self._closed.is_set() and self.proc.poll() not in (None, 0):
                    self.writer._fail(RuntimeError(
                        f"the store worker process exited with code {self.proc.returncode}"))
                self._closed.set()
                with self._ack_lock:
                    for done in self._acks.values():
                        done.set()
                return
            kind = msg[0]
            if kind == "ack":
                with self._ack_lock:
                    done = self._acks.pop(msg[1], None)
                if done is not None:
                    done.set()
            elif kind == "log":
                logging.getLogger(msg[1]).log(msg[2], msg[3])
            elif kind == "error":
                self.writer._report(msg[1])
            elif kind == "failed":
                self.writer._fail(msg[1])
            elif kind == "closed":
                self._closed.set()
