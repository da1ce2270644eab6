"""The Monitor: owns the hooks, counts steps, and hands each logged step to the writer.

Steps. A step is one ``optimizer.step()``, counted by the optimizer's pre/post step hooks (or
``monitor.step()`` in loops without a torch optimizer).

Closures. ``optimizer.step(closure)`` (Lightning's automatic optimization, LBFGS) runs the
forward and backward *inside* the step, after the step's pre-hooks. The pre-hook therefore
wraps the closure: the gradient instruments (``pre_step``) run when the closure's first
evaluation returns, i.e. after its backward and any clipping inside it, and before the optimizer
changes a parameter. Optimizers that evaluate the closure again within one step (LBFGS's line
search) do so at other parameter values: those evaluations are not measured (their forwards feed
no statistics), so every recorded value belongs to the first evaluation. An *iteration* of step ``k`` starts at the
first grad-enabled forward after step ``k - 1`` finished, so ``log()`` calls made before or after
``optimizer.step()`` land on the same step, and several forward/backward passes before one
step (gradient accumulation) are one step. Forwards under ``torch.no_grad()`` (evaluation) are
not training: they neither start an iteration nor feed the activation statistics.

The hot path. Hooks only enqueue device work into one preallocated buffer. When the next
iteration starts (or at ``close()``), the finished step is copied to the host once, without
waiting, and queued for the writer thread, which decodes it and writes it to disk.
"""

from __future__ import annotations

import atexit
import sys
import time
import warnings
import weakref

import torch
from torch import nn

from instrument import checkpointing, compiled, losses, transforms, unobserved, watched
from instrument.buffer import StatBuffer
from instrument.guard import Guard, InstrumentWarning
from instrument.instruments.base import HostStep, Instrument
from instrument.instruments.scalars import UserScalars
from instrument.store import schema
from instrument.store.records import Event, StepData
from instrument.store.writer import StoreWriter

UNSTEPPED_FORWARDS = 64
"""Training forwards without a step boundary after which a monitor without an optimizer warns
that ``monitor.step()`` is missing (gradient accumulation rarely spans more micro-batches)."""

MONITOR = "monitor"
"""``layer`` of the event stored when the monitor's own machinery fails (see ``Monitor._fail``)."""

HOOKS = ("begin_step", "model_input", "forward", "loss_inputs", "pre_step", "post_step",
         "end_step")
MEASURING = ("model_input", "forward", "loss_inputs", "pre_step", "post_step")
set_grad_enabled = torch._C._set_grad_enabled


class StepRecord:
    """One committed step in flight to the writer thread (see ``StoreWriter.submit``)."""

    def __init__(self, step, wall_time, copy, parts, sections, guard, select=None,
                 events=()):
        self.step, self.wall_time, self.copy = step, wall_time, copy
        self.parts, self.sections, self.guard = parts, sections, guard
        self.select = select  # distributed: (flat, parts) -> the parts to decode
        self.events = list(events)  # the monitor's own events of this step (with its data, so
        # that the diagnosis engine sees them with the step: see Monitor._optimizer_changed)

    def materialize(self):
        """Wait for the host copy, then let each instrument decode its part (writer thread)."""
        flat = self.copy.wait()
        host = HostStep(self.step, flat, self.sections, StepData(self.step, self.wall_time))
        parts = self.parts if self.select is None else self.select(flat, self.parts)
        for inst, info in parts:
            if not inst.disabled:
                try:
                    inst.decode(host, info)
                except Exception as exc:
                    self.guard.fail(inst, "decode", exc, self.step)
        return [host.data, *host.late], self.events + host.events


class Monitor:
    """Attached to one model and optimizer by :func:`instrument.watch`; see the module doc.

    Use ``log(**scalars)`` in the loop and ``close()`` at the end (or a ``with`` block).
    """

    def __init__(self, ctx, instruments: list, schedules: dict, writer: StoreWriter,
                 guard: Guard, run_dir: str, reducer=None):
        self.ctx = ctx
        self.instruments: list[Instrument] = instruments
        self.schedules = schedules
        self.writer = writer
        self.guard = guard
        self.run_dir = run_dir
        self.reducer = reducer  # distributed: combines the buffer across ranks, one collective
        # per step (instrument.distributed.reducer.Reducer); None in single-process runs
        self.buffer = StatBuffer(ctx.device)
        self._scalars = next(i for i in instruments if isinstance(i, UserScalars))
        for inst in instruments:
            guard.call(inst, "setup", self.buffer)
        if reducer is not None:
            reducer.setup(self.buffer)  # its own sections, before the layout is fixed
        self._implements = {i: {h for h in (*HOOKS, "snapshot") if i.overrides(h)}
                            for i in instruments}
        self._dispatch_cache: dict = {}  # active instruments -> {hook: [instruments]}
        self.buffer.allocate()
        self.step_index = 0  # the step the current iteration performs
        self._after_step = False  # the optimizer stepped; the next forward starts a new step
        self._open = False
        self._muted = False  # inside a closure's re-evaluation: forwards are not measured
        self._model_called = False  # the watched model ran a training forward this iteration
        self._active: list = []
        self._touched: set = set()
        self._dispatch: dict = {h: [] for h in HOOKS}
        self._handles: list = []
        self._closed = False
        self._failed = False  # the monitor's own machinery raised (see _fail)
        self._opt_signature = ctx.optimizer_signature()  # to notice add_param_group
        self._step_events: list = []  # the monitor's events stored with this step's record
        self._unstepped = 0  # training forwards since the last step boundary (no optimizer)
        self._off = False  # closed or failed: every hook does nothing
        self.dashboard = None  # a DashboardProcess when watch(dashboard=True)
        # without a criterion module, the standard functional losses are captured on the steps
        # where an instrument takes loss calls (instrument.losses; off on all other steps)
        self._capture = (None if isinstance(ctx.loss_fn, nn.Module)
                         else losses.LossCapture(self._captured))
        self._capturing = False
        self._traced = compiled.TracedModules()  # leaf modules hidden in compiled graphs
        self._recomputed = unobserved.NotedModules()  # forwards only a reentrant checkpoint ran
        self._attach()
        self._atexit = _register_atexit(self)

    # ---- public API ---------------------------------------------------------------------
    def log(self, data: dict | None = None, /, **scalars) -> None:
        """Record scalars for the current step: ``log(loss=loss, acc=acc)`` or ``log({"a/b": x})``.

        Tensors stay on their device (no host sync); values logged twice in a step are averaged.
        """
        if self._closed:
            raise RuntimeError("log() on a closed monitor")
        if self._failed:  # the monitor stopped measuring (see _fail)
            return
        items = {**(data or {}), **scalars}
        if not self._open:  # a log() never starts a new step: after optimizer.step() it
            try:            # still belongs to the step that just finished
                self._begin()
            except Exception as exc:
                self._fail(exc, "step bookkeeping")
                return
        for key, value in items.items():
            self._scalars.log(key, value)  # bad input raises here, in the user's frame
        self._touched.add(self._scalars)

    def step(self) -> None:
        """Count one step in loops that update parameters without a torch optimizer."""
        if self.ctx.optimizer is not None:
            raise RuntimeError("this monitor counts steps with the optimizer's step hooks; "
                               "monitor.step() is only for loops without a torch optimizer")
        self._pre_step(None, (), {})
        self._post_step(None, (), {})

    def close(self, status: str = schema.FINISHED, error: str | None = None) -> None:
        """Record the last step, remove every hook, flush the store and mark the run ended."""
        if self._closed:
            return
        self._closed = self._off = True
        watched.forget(self.ctx.model, self)
        self._stop_capture()  # also after an exception inside the step
        try:
            # distributed: the last step joins a collective only when every rank is closing
            # normally; a crashing rank must not start one its peers never join
            if not self._failed and (self.reducer is None
                                     or self.reducer.commit_at_close(status)):
                self._commit()
        except Exception as exc:  # fail open (strict re-raises, after the finally below)
            self._fail(exc, "last step's record")
        finally:
            for h in self._handles:
                h.remove()
            self._handles = []
            atexit.unregister(self._atexit)
            meta = {"steps": self.step_index + (1 if self._after_step else 0)}
            if error:
                meta["error"] = error
            self.writer.close(status, **meta)
            if self.reducer is not None:
                self.reducer.close(status, **meta)

    def flush(self, timeout: float = 30.0) -> None:
        """Commit nothing new, but wait until everything queued so far is on disk."""
        self.writer.flush(timeout)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.close(schema.CRASHED, error=f"{exc_type.__name__}: {exc}")

    @property
    def host_transfers(self) -> int:
        """Device-to-host copies made so far (one per logged step)."""
        return self.buffer.host_transfers

    # ---- hooks --------------------------------------------------------------------------
    def _attach(self) -> None:
        model, opt = self.ctx.model, self.ctx.optimizer
        compiled.prepare()
        self._eager_pre_forward = compiled.eager(self._pre_forward_body)
        self._handles.append(model.register_forward_pre_hook(self._model_pre_forward,
                                                             with_kwargs=True))
        for index, module in enumerate(self.ctx.modules):
            self._handles.append(module.register_forward_hook(self._leaf_hook(index)))
        if self.ctx.loss_fn is not None:
            self._handles.append(self.ctx.loss_fn.register_forward_hook(self._loss_hook,
                                                                        with_kwargs=True))
        if opt is not None:
            self._handles.append(opt.register_step_pre_hook(self._pre_step))
            self._handles.append(opt.register_step_post_hook(self._post_step))
        for inst in self.instruments:
            if inst.overrides("attach"):
                self._handles.extend(self.guard.call(inst, "attach") or ())

    def _model_pre_forward(self, module, args, kwargs):
        if torch.compiler.is_compiling():  # inside torch.compile: run outside the graph
            compiled.note_model_compiled(self._traced)  # at trace time only: no capture
            return self._eager_pre_forward(module, args, kwargs)
        return self._pre_forward_body(module, args, kwargs)

    def _pre_forward_body(self, module, args, kwargs):
        if torch.is_grad_enabled() and not self._off and not self._muted and \
                not checkpointing.in_backward():
            if transforms.in_transform():  # not measured (see transforms.py); notes say so
                self.ctx.services[transforms.SKIPPED] = True
                return None
            self._touch()
            if self._off:
                return None
            self._model_called = True
            if self.ctx.optimizer is None:
                self._unstepped += 1
                if self._unstepped == UNSTEPPED_FORWARDS:
                    self._warn_unstepped()
            self._run("model_input", args, kwargs)
        return None

    def _loss_hook(self, module, args, kwargs, output):
        if torch.compiler.is_compiling():  # traced into a compiled graph: see compiled.py
            compiled.note_traced(self._traced, compiled.LOSS_FN)
            return None
        # only a loss of this monitor's model: a criterion module shared with another watched
        # model must neither start nor advance this monitor's steps
        if (torch.is_grad_enabled() and not self._off and not self._muted
                and self._model_called and not self._after_step
                and self._dispatch["loss_inputs"] and not transforms.in_transform()):
            try:
                call = losses.from_module(module, args, kwargs, output)
            except Exception:  # torch accepted the call; never fail the user's loss over it
                if self.guard.strict:
                    raise
                return None
            self._run("loss_inputs", call)
        return None

    def _captured(self, fn, args, kwargs, output) -> None:
        """A functional loss computed while the capture is on (grad enabled)."""
        if self._off or not self._open or self._muted:
            return
        if transforms.in_transform():  # not measured (see transforms.py)
            self.ctx.services[transforms.SKIPPED] = True
            return
        try:
            call = losses.from_functional(fn, args, kwargs, output)
        except Exception:  # torch accepted the call; never fail the user's loss over it
            if self.guard.strict:
                raise
            return
        self._run("loss_inputs", call)

    def _stop_capture(self) -> None:
        if self._capturing:
            self._capturing = False
            losses.leave(self._capture)

    def _leaf_hook(self, index: int):
        dispatch, traced = self._dispatch["forward"], self._traced

        def hook(module, args, output):
            if torch.compiler.is_compiling():  # traced into a compiled graph: see compiled.py
                compiled.note_traced(traced, index)
                return None
            if not torch.is_grad_enabled() or self._off or self._muted:
                return None
            if checkpointing.in_backward():  # activation checkpointing: see checkpointing.py
                if checkpointing.reentrant_recompute():
                    self._recomputed.indices.add(index)
                return None
            if transforms.in_transform():  # torch.func: see transforms.py
                return None
            if self._after_step or not self._open:
                self._touch()
                if self._off:
                    return None
            if dispatch:
                # grad mode is on here: switch it off and back without a no_grad() object
                # (this runs once per leaf module per step)
                set_grad_enabled(False)
                try:
                    for inst in dispatch:
                        if inst.disabled:
                            continue
                        self._touched.add(inst)
                        try:
                            inst.forward(index, module, output)
                        except Exception as exc:  # fail open (strict re-raises)
                            self.guard.fail(inst, "forward", exc, self.step_index)
                finally:
                    set_grad_enabled(True)
            return None  # never replace the module's output

        return hook

    def _pre_step(self, optimizer, args, kwargs):
        if self._off:
            return None
        self._touch()
        if self.ctx.optimizer is not None and \
                self.ctx.optimizer_signature() != self._opt_signature:
            self._optimizer_changed()
        if self._off:  # the monitor failed just now (see _fail): measure nothing more
            return None
        # torch passes the step's own arguments, the optimizer first: (self, closure, ...)
        closure = args[1] if len(args) > 1 else kwargs.get("closure")
        if not callable(closure):
            self._stop_capture()  # the step's losses are computed; pre-step work is not training
            self._run("pre_step")
            return None
        # the forward/backward happen inside the step: measure when the closure returns
        wrapped = self._measure_after(closure)
        if len(args) > 1:
            return (args[0], wrapped, *args[2:]), kwargs
        return args, {**kwargs, "closure": wrapped}

    def _measure_after(self, closure):
        """``closure`` that runs the ``pre_step`` instruments once its first evaluation has
        returned (gradients final), and leaves later evaluations unmeasured (module doc)."""
        evaluated = False

        def closure_then_measure():
            nonlocal evaluated
            if evaluated:
                self._muted = True
                try:
                    return closure()
                finally:
                    self._muted = False
            evaluated = True
            loss = closure()  # its losses are captured (the capture stays on until here)
            self._stop_capture()
            if not self._off:
                self._run("pre_step")
            return loss

        return closure_then_measure

    def _post_step(self, optimizer, args, kwargs) -> None:
        if self._off:
            return
        self._touch()
        if self._off:
            return
        self._stop_capture()
        self._run("post_step")
        self._after_step = True
        self._model_called = False
        self._unstepped = 0

    def _warn_unstepped(self) -> None:
        """Without an optimizer, steps are counted by ``monitor.step()`` only: say so once when
        many forwards went by without one (they are all being recorded as one step)."""
        msg = (f"avionics: watch() got no optimizer and monitor.step() has not been called for "
               f"{UNSTEPPED_FORWARDS} training forwards: they are all recorded as step "
               f"{self.step_index}. Call monitor.step() after each parameter update (or pass "
               "the optimizer to watch()).")
        warnings.warn(msg, UserWarning, stacklevel=7)  # the user's model(x) call
        self.writer.submit(Event(schema.STEPS_NOT_COUNTED, schema.WARNING, msg,
                                 step=self.step_index,
                                 suggestion="Call monitor.step() after each parameter update."))

    def _optimizer_changed(self) -> None:
        """``add_param_group`` (or (un)freezing) since the last step: re-read what the
        optimizer holds, hook newly held parameters, and say so in one info event."""
        self._opt_signature = self.ctx.optimizer_signature()
        try:
            unknown = self.ctx.refresh_optimizer()
        except Exception as exc:  # fail open (strict re-raises)
            self._fail(exc, "optimizer re-read")
            return
        for inst in self.instruments:
            if inst.overrides("optimizer_changed"):
                self._handles.extend(self.guard.call(inst, "optimizer_changed",
                                                     step=self.step_index) or ())
        groups = len(self._opt_signature)
        held = sum(size for size, _ in self._opt_signature)
        trained = sum(grad for _, grad in self._opt_signature)
        message = (f"The optimizer's parameter groups changed before step {self.step_index} "
                   f"(add_param_group, or parameters (un)frozen): {groups} group(s), "
                   f"{held} parameter(s), {trained} requiring grad. The update, effective-LR, "
                   "adaptive-LR and zero_grad statistics follow them from this step.")
        if unknown:
            message += (f" {len(unknown)} parameter(s) the model did not hold at watch() are "
                        "not recorded (watch() after building the whole model records them).")
        frozen = [n for n, p in zip(self.ctx.param_names, self.ctx.params)
                  if not p.requires_grad]
        # with the step's record: the diagnosis engine updates the run's facts from it
        self._step_events.append(Event(
            schema.OPTIMIZER_CHANGED, schema.INFO, message, step=self.step_index,
            evidence={"groups": groups, "unknown": len(unknown), "frozen": frozen}))

    # ---- step state machine ---------------------------------------------------------------
    def _touch(self) -> None:
        try:
            if self._after_step:
                self._commit()
                self.step_index += 1
                self._after_step = False
            if not self._open:
                self._begin()
        except Exception as exc:  # the monitor's own machinery: fail open (strict re-raises)
            self._fail(exc, "step bookkeeping")

    def _fail(self, exc: Exception, where: str) -> None:
        """The monitor's own machinery (not an instrument) raised: stop measuring for the rest
        of the run with one warning and one stored event, and let training go on. Under
        ``strict=True`` the error is raised instead, and under torch.distributed too: a rank
        that stopped joining the per-step collective would leave its peers waiting in it."""
        if self.guard.strict or self.reducer is not None:
            raise exc
        if self._failed:
            return
        self._failed = self._off = True
        try:
            self._stop_capture()
        except Exception:  # pragma: no cover - leaving the capture mode cannot fail in practice
            pass
        msg = (f"avionics stopped measuring at step {self.step_index}: its {where} failed; "
               f"training continues and the run keeps what was recorded before. "
               f"{type(exc).__name__}: {exc}")
        warnings.warn(msg, InstrumentWarning, stacklevel=3)
        self.guard.report(Event(schema.INSTRUMENT_ERROR, schema.WARNING, msg,
                                step=self.step_index, layer=MONITOR,
                                evidence={"where": where, "error": f"{type(exc).__name__}: {exc}"}))

    def _begin(self) -> None:
        step = self.step_index
        self._active = [i for i in self.instruments
                        if not i.disabled and self.schedules[i.name](step)]
        key = tuple(id(i) for i in self._active)
        lists = self._dispatch_cache.get(key)
        if lists is None:
            lists = self._dispatch_cache[key] = {
                h: [i for i in self._active if h in self._implements[i]] for h in HOOKS}
        for hook in HOOKS:
            self._dispatch[hook][:] = lists[hook]
        self.buffer.reset()
        if self._capture is not None and lists["loss_inputs"] and not self._traced.model_compiled:
            losses.enter(self._capture)
            self._capturing = True
        self._open = True
        self._touched = set()  # instruments whose hooks ran at this step
        self._run("begin_step", step)

    def _run(self, hook: str, *args) -> None:
        insts = self._dispatch[hook]
        if not insts:
            return
        measuring = hook in MEASURING
        with torch.no_grad():
            for inst in insts:
                if inst.disabled:
                    continue
                if measuring:
                    self._touched.add(inst)
                try:
                    getattr(inst, hook)(*args)
                except Exception as exc:  # fail open (strict re-raises)
                    self.guard.fail(inst, hook, exc, self.step_index)

    def _commit(self) -> None:
        if not self._open:
            return
        self._open = False
        self._stop_capture()
        self._run("end_step")
        # only instruments that measured something this step (a step whose optimizer.step()
        # never came, e.g. skipped by a GradScaler, has activations but no gradient norms)
        parts = [i for i in self._active if i in self._touched and not i.disabled]
        select = None
        if self.reducer is not None:
            # distributed: every rank joins this step's one collective, whatever it measured
            # itself (a rank-local early return would leave the others waiting); it returns
            # what this rank records, filtered on the writer thread by what any rank measured
            parts = self.reducer.commit(self.buffer, self.step_index, self._active, parts)
            select = self.reducer.select
        if len(self._traced.indices) > len(self._traced.reported):
            self._report_traced()
        events, self._step_events = self._step_events, []
        if len(self._recomputed.indices) > len(self._recomputed.reported):
            self.writer.submit(checkpointing.unobserved_event(
                self.ctx, self._recomputed.unreported(), self._blind({"forward"}),
                self.step_index))
        if not parts:
            for e in events:
                self.writer.submit(e)
            return
        copy = self.buffer.to_host()
        infos = [(i, self.guard.call(i, "snapshot", step=self.step_index)
                  if "snapshot" in self._implements[i] else None) for i in parts]
        self.writer.submit(StepRecord(self.step_index, time.time(), copy, infos,
                                      dict(self.buffer.sections), self.guard, select, events))

    def _report_traced(self) -> None:
        """One info event for module outputs newly found hidden inside a compiled graph (and one
        for losses no longer captured because the model is compiled)."""
        traced = self._traced
        if traced.model_compiled and self._capture is not None and \
                not traced.model_compiled_reported:
            traced.model_compiled_reported = True
            self.ctx.services["capture_off"] = compiled.CAPTURE_OFF
            self.writer.submit(compiled.capture_off_event(self.step_index))
        new = traced.unreported()
        if new:
            hooks = {"forward"} | ({"loss_inputs"} if compiled.LOSS_FN in new else set())
            self.writer.submit(compiled.unobserved_event(self.ctx, new, self._blind(hooks),
                                                         self.step_index))

    def _blind(self, hooks: set) -> list:
        """Names of the instruments that measure through any of ``hooks`` (and so see nothing
        of modules whose forward the hooks cannot observe)."""
        return [i.name for i in self.instruments if hooks & self._implements[i]]


def _register_atexit(monitor: Monitor):
    """Close a monitor the user forgot to close when the interpreter exits (weakly held)."""
    ref = weakref.ref(monitor)

    def close_at_exit():
        m = ref()
        if m is not None and not m._closed:
            crashed = getattr(sys, "last_value", None) is not None  # an uncaught exception
            m.close(schema.CRASHED if crashed else schema.FINISHED,
                    error=repr(sys.last_value) if crashed else None)

    atexit.register(close_at_exit)
    return close_at_exit
