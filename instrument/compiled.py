"""``torch.compile`` support: watch a compiled model without changing what it compiles.

Forward hooks of modules inside a compiled region are traced by dynamo. Hooks that read or
write Python state (step counters, sets of seen modules) make dynamo guard on that state, so the
graph recompiles whenever it changes, until ``recompile_limit`` makes dynamo give up and run the
model eagerly, with eager numerics: the run then silently differs from the compiled plain run.
So avionics' hooks do nothing inside a compiled graph:

* a leaf module's hook returns at once when dynamo traces it (``torch.compiler.is_compiling()``
  is a constant while tracing, so no guard and no graph op results), after noting, at trace time
  only, that this module's output is hidden inside a compiled graph (:func:`note_traced`, which
  dynamo runs once per trace as a constant-result call, never at run time);
* the model's own pre-forward hook, which starts a step and looks at the input batch, runs
  eagerly outside the graph (``torch.compiler.disable``): a graph break before any computation,
  so the graph itself is the plain one.

A compiled graph does not expose the outputs of the modules fused into it, so the instruments
that read module outputs (activation statistics, forward order, the forward part of the NaN
origin) cannot see them. The monitor stores one ``compiled_unobserved`` info event naming the
modules and instruments affected, so the missing rows are explained in the run. Everything
read from parameters, gradients and the optimizer is unaffected.

``watch(torch.compile(model), ...)`` attaches to the wrapped module (``_orig_mod``), and names
never carry dynamo's ``_orig_mod.`` prefix, so a run reads the same compiled or not.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from instrument import unobserved

COMPILED_UNOBSERVED = "compiled_unobserved"
"""Event code: module outputs inside a compiled graph that forward hooks could not see."""

LOSS_FN = -1
"""The index :func:`note_traced` notes for the ``loss_fn`` module (leaf modules count from 0)."""

WRAPPER_ATTR = "_orig_mod"
_PREFIX = WRAPPER_ATTR + "."


def is_compiled_wrapper(model) -> bool:
    """True for the ``OptimizedModule`` that ``torch.compile(module)`` returns."""
    if "torch._dynamo" not in sys.modules:  # no compiled module can exist yet
        return False
    from torch._dynamo.eval_frame import OptimizedModule

    return isinstance(model, OptimizedModule)


def unwrap(model: nn.Module) -> nn.Module:
    """The module that a ``torch.compile(...)`` wrapper (possibly nested) compiles."""
    while is_compiled_wrapper(model):
        model = getattr(model, WRAPPER_ATTR)
    return model


def strip_prefix(name: str) -> str:
    """A module/parameter path without dynamo's ``_orig_mod.`` components (compiled submodules)."""
    if WRAPPER_ATTR not in name:
        return name
    parts = [p for p in name.split(".") if p != WRAPPER_ATTR]
    return ".".join(parts)


class TracedModules(unobserved.NotedModules):
    """Leaf modules whose forward dynamo traced into a compiled graph (noted at trace time)."""

    def __init__(self):
        super().__init__()
        self.model_compiled = False  # the watched model's own forward was traced
        self.model_compiled_reported = False


def note_traced(traced: TracedModules, index: int) -> None:
    """Called from a hook while dynamo traces it: a constant-result call, so this Python runs
    once per trace and never at run time (see :func:`prepare`)."""
    traced.indices.add(index)


def note_model_compiled(traced: TracedModules) -> None:
    """Called from the model's pre-forward hook while dynamo traces it (constant-result, like
    :func:`note_traced`): the model runs compiled from now on."""
    traced.model_compiled = True


def prepare() -> None:
    """Mark :func:`note_traced` and :func:`note_model_compiled` as constant-result calls for
    dynamo (idempotent)."""
    for fn in (note_traced, note_model_compiled):
        if not getattr(fn, "_dynamo_marked_constant", False):
            torch.compiler.assume_constant_result(fn)


def unobserved_event(ctx, indices: list, instruments: list, step: int):
    """The info event saying which module outputs a compiled graph hid from which instruments."""
    names = [ctx.module_names[i] if i != LOSS_FN else "loss_fn" for i in indices]
    return unobserved.event(
        COMPILED_UNOBSERVED, names, "run inside a torch.compile'd graph",
        ". A compiled graph does not expose the outputs of the modules fused into it, so forward "
        "hooks cannot see them:", instruments, step)


def eager(fn):
    """``fn`` run outside any compiled graph (a graph break where a compiled region calls it)."""
    return torch.compiler.disable(fn, recursive=True)


CAPTURE_OFF = ("the model runs under torch.compile: switching the loss capture (a torch function "
               "mode) on and off between steps would make dynamo recompile the graph, and inside "
               "a graph the calls are traced, not run, so losses are not captured")
"""Why a compiled model's losses are not captured (``ctx.services["capture_off"]``)."""


def capture_off_event(step: int):
    """The info event saying that losses are not captured because the model is compiled."""
    from instrument.store import schema
    from instrument.store.records import Event

    return Event(
        schema.LOSS_NOT_CAPTURED, schema.INFO,
        f"Losses are not captured: {CAPTURE_OFF}. The criterion and logits series, the rules "
        "that read them and the Cockpit per-sample statistics have no loss to read. Compute the "
        "loss with a criterion module outside the compiled model and pass it as "
        "watch(..., loss_fn=criterion).", step=step, evidence={"reason": "torch.compile"})
