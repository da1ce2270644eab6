"""``watch()``: check the arguments, create the run directory, and attach a Monitor."""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from instrument import compiled, distributed, watched
from instrument.cockpit.presets import Preset
from instrument.cockpit.presets import resolve as resolve_preset
from instrument.context import Context
from instrument.diagnosis.live import attach_engine, check_thresholds
from instrument.guard import Guard
from instrument.instruments import REGISTRY, SCHEDULABLE
from instrument.losses import declare_captured_criterion
from instrument.monitor import Monitor
from instrument.schedules import ScheduleSpec, as_schedule
from instrument.store import schema
from instrument.store.reader import is_run_dir, store_path
from instrument.store.writer import StoreWriter
from instrument.summary import host_summary, model_summary, optimizer_summary, versions

log = logging.getLogger("avionics")

DEFAULT_RUN = "runs/run"


def watch(model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
          run: str = DEFAULT_RUN, *, schedules: Mapping[str, ScheduleSpec] | None = None,
          loss_fn: nn.Module | Callable | None = None, strict: bool = False,
          name: str | None = None, overwrite: bool = False,
          flush_interval: float = 0.5, per_rank: bool = False,
          dashboard: bool | int = False,
          thresholds: Mapping[str, Any] | None = None,
          preset: str | Preset | None = None) -> Monitor:
    """Attach avionics to an existing training loop and record into ``run``.

    Example::

        monitor = instrument.watch(model, optimizer, run="runs/exp1")
        for x, y in loader:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            monitor.log(loss=loss)
        monitor.close()

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: its torch optimizer, or a framework's wrapper of it (accelerate's
            prepared optimizer, Lightning's, Hugging Face Trainer's: the torch optimizer inside
            is used); steps are counted with its step hooks, also when the loop passes a
            closure (``optimizer.step(closure)``). Without one, call ``monitor.step()`` after
            each update.
        run: directory of the run (created). If it already holds a run, the next free name
            ``<run>-2``, ``<run>-3``, ... is used (``monitor.run_dir`` tells which) unless
            ``overwrite=True`` replaces it.
        schedules: when each instrument runs, by name (see ``instrument.instruments.REGISTRY``):
            an int (every n steps), ``instrument.every(...)``, ``instrument.log_spaced()``,
            ``None`` (off) or a callable ``step -> bool``. The key ``"*"`` sets all at once.
        loss_fn: optional. Without it (or with a plain function), the standard functional
            losses computed anywhere in the step are captured: ``F.cross_entropy`` (also through
            ``nn.CrossEntropyLoss`` and Hugging Face's loss functions), ``F.nll_loss``,
            ``F.binary_cross_entropy[_with_logits]``, ``F.mse_loss``, whether called in the
            loop or inside the model's ``forward`` (``logits, loss = model(x, y)``). The
            criterion and logits instruments, the criterion rules and the Cockpit presets read
            them; the capture is on only on the steps those are scheduled on. A criterion
            module (e.g. ``nn.CrossEntropyLoss()``) given here is hooked instead, whatever its
            class, and nothing else is captured.
        strict: re-raise instrument errors instead of disabling the instrument (for tests).
        name: display name of the run (default: the directory name).
        overwrite: replace an existing run at ``run``.
        flush_interval: seconds between writes; a killed process loses at most about this.
        per_rank: under torch.distributed, each rank also writes its own store in
            ``<run>/ranks/rank-<rank>/`` (its step times, loss, activation statistics and
            NaN events on its own data). Rank 0 writes the run store either way; every rank
            must call ``watch()`` and ``close()`` (see docs/distributed.md).
        dashboard: also serve the dashboard of the run directory's parent from a separate
            process and print its URL (an int picks the port; under torch.distributed only
            rank 0 serves). It serves until this process exits, after ``close()`` too;
            ``monitor.dashboard.wait()`` keeps it up until Ctrl+C.
        thresholds: overrides of the diagnosis rules' thresholds by name, e.g.
            ``{"dead_fraction": 0.7, "disabled_rules": ["repeated_batch"]}`` (see
            ``instrument.diagnosis.Thresholds`` and docs/rules.md).
        preset: Cockpit's instruments (docs/cockpit.md): ``"economy"``, ``"business"``,
            ``"full"`` (its configurations) or an ``instrument.cockpit.Preset`` with options.
            Each of them can also be enabled alone by naming it in ``schedules``. Most need
            the loss: a captured functional loss or ``loss_fn``'s.

    Returns:
        The :class:`~instrument.monitor.Monitor`; use it as a context manager or call
        ``close()``.

    Raises:
        TypeError, ValueError: for arguments that cannot work, with how to fix them.
    """
    optimizer = unwrap_optimizer(optimizer)
    _check_model_optimizer(model, optimizer)
    model = compiled.unwrap(model)  # torch.compile(model): attach to the module it compiles
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be the criterion the loop calls: a loss module such as "
                        f"nn.CrossEntropyLoss(), a function, or None (losses computed with "
                        f"F.cross_entropy & co. are then captured); got "
                        f"{type(loss_fn).__name__} {_short_repr(loss_fn)}")
    if not isinstance(loss_fn, nn.Module):
        loss_fn = None  # a plain function cannot be hooked: the losses it computes are captured
    resolved = _check_schedules(schedules)
    port = type(dashboard) is int and 0 < dashboard < 65536
    if not (dashboard is True or dashboard is False or dashboard is None or port):
        raise ValueError(f"dashboard must be True, False or a port number, got {dashboard!r}")
    checked_thresholds = check_thresholds(thresholds)
    cockpit = resolve_preset(preset, resolved, loss_fn,
                             {cls.name for cls in REGISTRY if cls.optional})
    previous = watched.open_monitor(model)
    if previous is not None:  # a notebook cell run again: never two monitors on one model
        warnings.warn(f"avionics: this model is still watched by an open monitor recording "
                      f"into {previous.run_dir}; closing it before watching the model again.",
                      stacklevel=2)
        previous.close()
    ctx = Context.build(model, optimizer, loss_fn)
    cockpit.install(ctx)
    run_dir = _RunDir(run, overwrite)
    try:
        return _attach(ctx, run_dir, resolved, cockpit, checked_thresholds, name=name,
                       strict=strict, flush_interval=flush_interval, per_rank=per_rank,
                       dashboard=dashboard)
    except BaseException:
        run_dir.discard()  # a watch() that fails leaves nothing behind
        raise


def _attach(ctx, run_dir: _RunDir, resolved, cockpit, checked_thresholds, *, name, strict,
            flush_interval, per_rank, dashboard) -> Monitor:
    """The part of ``watch()`` that creates the run: every argument is already checked."""
    model, optimizer = ctx.model, ctx.optimizer
    # torch.distributed with >1 rank: rank 0 prepares the run directory for all (a set-up
    # collective); None otherwise, and nothing distributed happens
    session = distributed.join(ctx, run_dir.prepare, per_rank=per_rank, strict=strict)
    path = session.run_dir if session else run_dir.prepare()
    instruments = [cls(ctx) for cls in REGISTRY
                   if (not cls.optional or cls.name in cockpit.enabled) and cls.applies(ctx)]
    if session:
        instruments = session.configure(instruments)
    sched = {i.name: i.run_schedule(as_schedule(
        resolved.get(i.name, resolved.get("*", i.default_schedule)), f"schedules[{i.name!r}]"))
        for i in instruments}
    sched["scalars"] = as_schedule(1)  # logging is explicit: always on
    meta = {
        "name": name or os.path.basename(os.path.normpath(path)),
        "start_time": time.time(),
        "model": model_summary(model, ctx.module_names),
        "optimizer": optimizer_summary(optimizer),
        "settings": {"schedules": {k: repr(v) for k, v in sched.items()},
                     "strict": strict, "flush_interval": flush_interval},
        "instruments": [i.name for i in instruments],
        "cockpit": cockpit.describe(),
        "versions": versions(),
        "host": host_summary(ctx.device),
    }
    engine = attach_engine(ctx, instruments, sched, checked_thresholds, strict)
    if ctx.loss_fn is None:  # losses are captured: the criterion rules read them
        engine = declare_captured_criterion(engine, checked_thresholds, strict)
    meta["diagnosis"] = engine.describe()
    run_store = store_path(path)

    def open_store(path, meta):
        # the diagnosis rules watch the run store only (per-rank stores hold partial views)
        writer = StoreWriter(path, meta, flush_interval=flush_interval, strict=strict,
                             observers=[engine] if path == run_store else [])
        run_dir.writers.append(writer)
        return writer

    if session:
        session.annotate(meta)
        writer = session.open_writer(open_store, meta)  # rank 0: the run store
    else:
        writer = open_store(run_store, meta)
    guard = Guard(strict, report=writer.submit)
    monitor = Monitor(ctx, instruments, sched, writer, guard, path,
                      reducer=session.reducer if session else None)
    watched.register(model, monitor)
    serves = session is None or session.writes_run_store  # one server per job: rank 0's
    if dashboard is not False and dashboard is not None and serves:
        monitor.dashboard = _start_dashboard(path, dashboard, strict)
    return monitor


class _RunDir:
    """The run directory ``watch()`` records into, created once and removed again if
    ``watch()`` fails before returning (with whatever store it had started)."""

    def __init__(self, run, overwrite: bool):
        self.run, self.overwrite = run, overwrite
        self.path: str | None = None
        self.created = False  # the directory did not exist before
        self.writers: list = []

    def prepare(self) -> str:
        if self.path is None:
            self.path, self.created = _prepare_run_dir(self.run, self.overwrite)
        return self.path

    def discard(self) -> None:
        for writer in self.writers:
            try:
                writer.close(schema.CRASHED)
            except Exception:  # the original error matters more
                log.debug("avionics: closing the store of a failed watch()", exc_info=True)
        if self.path is None:
            return
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for suffix in ("", "-wal", "-shm"):  # an existing directory: only what watch() wrote
            try:
                os.remove(store_path(self.path) + suffix)
            except OSError:
                pass


def unwrap_optimizer(optimizer):
    """The torch optimizer inside framework wrappers (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``, anything exposing it as ``.optimizer``, nested).

    A wrapper's ``step()`` ends in the inner optimizer's ``step()``, so hooks on the inner one
    see every real update, and only those (accelerate skips the inner step on accumulation
    micro-batches)."""
    seen = []
    while optimizer is not None and not _is_torch_optimizer(optimizer):
        if isinstance(optimizer, LRScheduler) or len(seen) > 8:
            break
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        seen.append(type(optimizer).__name__)
        optimizer = inner
    return optimizer


def _is_torch_optimizer(obj) -> bool:
    """A real, initialized torch optimizer (a wrapper may subclass Optimizer without calling
    its ``__init__``, as ``AcceleratedOptimizer`` does: it has no hook dictionaries)."""
    return (isinstance(obj, torch.optim.Optimizer)
            and hasattr(obj, "_optimizer_step_pre_hooks"))


def _start_dashboard(run_dir: str, dashboard, strict: bool):
    """The dashboard process for ``watch(dashboard=...)``; a failure never stops training."""
    from instrument.commands.dashboard import DashboardProcess

    run_dir = os.path.abspath(run_dir)
    try:
        return DashboardProcess(os.path.dirname(run_dir), run=os.path.basename(run_dir),
                                port=None if dashboard is True else dashboard)
    except Exception as exc:  # fail open: training matters more than the view of it
        if strict:
            raise
        log.warning("avionics: could not start the dashboard (%s: %s); training continues. "
                    "Serve it by hand: avionics dashboard %s", type(exc).__name__, exc,
                    os.path.dirname(run_dir))
        return None


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_model_optimizer(model, optimizer) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"watch() needs the torch.nn.Module you train as its first argument, "
                        f"got {type(model).__name__}. Call watch(model, optimizer, run=...).")
    if optimizer is None:
        return
    if not _is_torch_optimizer(optimizer):
        hint = (" That looks like a learning-rate scheduler; pass the optimizer it wraps."
                if isinstance(optimizer, LRScheduler) else
                " It subclasses torch.optim.Optimizer but was never initialized as one."
                if isinstance(optimizer, torch.optim.Optimizer) else "")
        raise TypeError(f"watch()'s second argument must be a torch.optim.Optimizer, a wrapper "
                        f"exposing one as .optimizer (accelerate, Lightning, Hugging Face), or "
                        f"None for loops that call monitor.step(); got "
                        f"{type(optimizer).__module__}.{type(optimizer).__qualname__}." + hint)
    model_params = {id(p) for p in model.parameters()}
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if model_params and not model_params & held:
        raise ValueError("the optimizer holds none of the model's parameters: it was probably "
                         "created for another model, or before the model was replaced. Create "
                         "it from model.parameters() and pass both to watch().")


def _check_schedules(schedules) -> dict:
    if schedules is None:
        return {}
    if not isinstance(schedules, Mapping):
        raise TypeError(f"schedules must be a dict of instrument name -> schedule, got "
                        f"{type(schedules).__name__}")
    unknown = sorted(set(schedules) - set(SCHEDULABLE) - {"*"})
    if unknown:
        raise ValueError(f"unknown instrument name(s) in schedules: {unknown}; known: "
                         f"{list(SCHEDULABLE)} (or '*' for all)")
    for key, spec in schedules.items():
        as_schedule(spec, f"schedules[{key!r}]")  # validate now, in the caller's frame
    return dict(schedules)


def _prepare_run_dir(run, overwrite: bool) -> tuple:
    """``(path, created)``: the directory to record into, and whether it is new."""
    if not isinstance(run, (str, os.PathLike)):
        raise TypeError(f"run must be a directory path, got {type(run).__name__}")
    run = os.fspath(run)
    if os.path.isfile(run):
        raise ValueError(f"run={run!r} is an existing file; watch() needs a directory path for "
                         "the run (it is created if missing). Pick another name.")
    if is_run_dir(run):
        if overwrite:
            for suffix in ("", "-wal", "-shm"):
                path = store_path(run) + suffix
                if os.path.exists(path):
                    os.remove(path)
        else:
            base, n = run.rstrip("/\\"), 2
            while is_run_dir(f"{base}-{n}") or os.path.isfile(f"{base}-{n}"):
                n += 1
            new = f"{base}-{n}"
            log.warning("avionics: %s already holds a run; recording into %s (pass "
                        "overwrite=True to replace it)", run, new)
            run = new
    created = not os.path.isdir(run)
    try:
        os.makedirs(run, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the run directory {run!r}: {exc}") from exc
    if not os.access(run, os.W_OK):
        raise ValueError(f"the run directory {run!r} is not writable")
    return run, created


__all__ = ["watch", "unwrap_optimizer"]
