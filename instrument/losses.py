"""Losses as the instruments see them, whether or not the loop has a criterion module.

Most training code computes its loss with a functional call somewhere in the step: inside the
model's ``forward`` (nanoGPT's ``logits, loss = model(x, y)``, every Hugging Face model, whose
loss functions call ``nn.functional.cross_entropy``), inside an ``nn.CrossEntropyLoss`` module
called from ``forward``, or in the loop. :class:`LossCapture` sees every call of the standard
functional losses (:data:`FUNCTIONALS`) made on the thread while it is active, and hands each
one, as a :class:`LossCall`, to the monitor, which feeds it to the criterion and logits
instruments and to the Cockpit per-sample engine, as it does for the calls of a criterion module
given as ``watch(loss_fn=...)`` (:func:`from_module`).

Why a ``TorchFunctionMode``: it is torch's own interception point for these functions (they call
``handle_torch_function`` when a mode is active), it catches them wherever they are called from
(a module, a library, ``from torch.nn.functional import cross_entropy``), it is thread-local,
and it needs no patching of torch. Its price is a Python call for every torch function on the
thread while it is on (about 1.5 us per op on this project's CPU), so the monitor enters it only
on the steps where an instrument asks for losses, and leaves it before the optimizer step.
"""

from __future__ import annotations

import copy
import inspect

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import _reduction
from torch.overrides import TorchFunctionMode

CROSS_ENTROPY, NLL, BCE, BCE_LOGITS, MSE, OTHER = (
    "cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "mse_loss", "other")
CLASSIFIERS = (CROSS_ENTROPY, NLL)
"""Kinds whose input has a class dimension and whose chance-level loss is ln(classes)."""

FUNCTIONALS = {F.cross_entropy: CROSS_ENTROPY, F.nll_loss: NLL,
               F.binary_cross_entropy: BCE, F.binary_cross_entropy_with_logits: BCE_LOGITS,
               F.mse_loss: MSE}
"""The functional losses captured without a criterion module, and their kinds."""

_FUNCTION_OF = {kind: fn for fn, kind in FUNCTIONALS.items()}
_MODULES = ((nn.CrossEntropyLoss, CROSS_ENTROPY, ("weight", "ignore_index", "label_smoothing")),
            (nn.NLLLoss, NLL, ("weight", "ignore_index")),
            (nn.BCEWithLogitsLoss, BCE_LOGITS, ("weight", "pos_weight")),
            (nn.BCELoss, BCE, ("weight",)),
            (nn.MSELoss, MSE, ()))
_SIGNATURES = {fn: inspect.signature(fn) for fn in FUNCTIONALS}

CAPTURED_FACTS = {"class": "captured functional losses", "kind": CROSS_ENTROPY,
                  "reduction": "mean", "ignore_index": -100, "captured": True}
"""What the diagnosis rules are told about the criterion when no ``loss_fn`` is given: the
classifier rules run, on the series the criterion and logits instruments record for the
cross-entropy calls they capture (no other kind records classes or logit rows)."""


class LossCall:
    """One call of a loss: its kind, arguments (input first, target second) and output.

    ``kwargs`` holds the options by name (``reduction`` always, in its modern spelling;
    ``weight``, ``ignore_index``, ``label_smoothing``, ``pos_weight`` as the kind has them).
    ``fn(*args, **kwargs)`` computes the loss again without any hook of ours.
    """

    __slots__ = ("kind", "name", "fn", "args", "kwargs", "output", "module")

    def __init__(self, kind, name, fn, args, kwargs, output, module=None):
        self.kind, self.name, self.fn = kind, name, fn
        self.args, self.kwargs, self.output, self.module = args, kwargs, output, module

    @property
    def input(self):
        return self.args[0] if self.args else None

    @property
    def target(self):
        return self.args[1] if len(self.args) > 1 else None

    @property
    def reduction(self) -> str | None:
        return self.kwargs.get("reduction")

    @property
    def ignore_index(self) -> int | None:
        return self.kwargs.get("ignore_index", -100) if self.kind in CLASSIFIERS else None

    @property
    def classifier(self) -> bool:
        return self.kind in CLASSIFIERS

    def step_kind(self, first: str | None) -> str | None:
        """Captured losses: the classifier kind a step records, given the kind of its first
        classifier call so far (``first``, None before it). None when this call is not
        recorded: not a classifier, or another kind than the step's first (a step mixing
        ``F.cross_entropy`` with ``F.nll_loss`` never averages the two)."""
        if not self.classifier or (first is not None and self.kind != first):
            return None
        return self.kind

    def recompute(self, input=None, reduction: str | None = None):
        """The loss again (``input`` replacing the first argument, ``reduction`` overridden);
        never goes through a module's hooks."""
        args = self.args if input is None else (input,) + tuple(self.args[1:])
        kwargs = self.kwargs if reduction is None else {**self.kwargs, "reduction": reduction}
        if self.kind == OTHER:
            module = self.module
            if reduction is not None:
                module = copy.copy(module)  # own __dict__: the user's module stays as it is
                module.reduction = reduction
            return module.forward(*args, **self.module_kwargs())
        return self.fn(*args, **kwargs)

    def module_kwargs(self) -> dict:
        """Keyword arguments for :meth:`replay_module`'s module besides input and target."""
        if self.kind != OTHER:
            return {}
        return {k: v for k, v in self.kwargs.items() if k != "reduction"}

    def replay_module(self) -> nn.Module | None:
        """A fresh criterion module computing this loss (for BackPACK), or None."""
        if self.kind == OTHER:
            return copy.copy(self.module)
        for cls, kind, options in _MODULES:
            if kind == self.kind:
                return cls(**{k: self.kwargs[k] for k in options if k in self.kwargs},
                           reduction=self.reduction)
        return None


def from_functional(fn, args: tuple, kwargs: dict, output) -> LossCall:
    """The :class:`LossCall` of a captured call ``fn(*args, **kwargs)`` of a FUNCTIONALS loss."""
    bound = _SIGNATURES[fn].bind(*args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    size_average, reduce = a.pop("size_average", None), a.pop("reduce", None)
    if size_average is not None or reduce is not None:
        a["reduction"] = _reduction.legacy_get_string(size_average, reduce)
    x, t = a.pop("input"), a.pop("target")
    kind = FUNCTIONALS[fn]
    return LossCall(kind, f"F.{kind}", fn, (x, t), a, output)


def from_module(module: nn.Module, args: tuple, kwargs: dict, output) -> LossCall:
    """The :class:`LossCall` of a call of the criterion module given as ``watch(loss_fn=...)``."""
    for cls, kind, options in _MODULES:
        if isinstance(module, cls) and type(module).forward is cls.forward:
            x = args[0] if args else kwargs.get("input")
            t = args[1] if len(args) > 1 else kwargs.get("target")
            opts = {k: getattr(module, k) for k in options}
            opts["reduction"] = module.reduction
            return LossCall(kind, type(module).__name__, _FUNCTION_OF[kind], (x, t), opts,
                            output, module)
    opts = dict(kwargs)
    if hasattr(module, "reduction"):
        opts["reduction"] = module.reduction
    args = args if args else tuple(kwargs.get(k) for k in ("input", "target") if k in kwargs)
    opts = {k: v for k, v in opts.items() if k not in ("input", "target")}
    return LossCall(OTHER, type(module).__name__, None, tuple(args), opts, output, module)


class LossCapture(TorchFunctionMode):
    """Hands every grad-enabled call of a FUNCTIONALS loss to ``sink(LossCall)``, after the
    loss is computed, and returns the loss untouched. Entered and left by the monitor with
    :func:`enter` / :func:`leave`, not as a ``with`` block: it spans from the step's first
    forward to its optimizer step."""

    def __init__(self, sink):
        super().__init__()
        # under torch.compile the sink runs eagerly (one graph break after the loss), so the
        # compiled graph never contains avionics' bookkeeping
        self.sink = torch.compiler.disable(sink)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in FUNCTIONALS and torch.is_grad_enabled():
            self.sink(func, args, kwargs or {}, out)
        return out


def enter(mode: TorchFunctionMode) -> None:
    """Push ``mode`` on this thread's torch-function mode stack."""
    mode.__enter__()


def leave(mode: TorchFunctionMode) -> bool:
    """Take ``mode`` off this thread's stack wherever it sits (modes the user entered after it
    and has not left yet stay, in their order). False if it is not on this thread's stack."""
    from torch._C import (
        _len_torch_function_stack,
        _pop_torch_function_stack,
        _push_on_torch_function_stack,
    )

    above = []
    found = False
    try:
        while _len_torch_function_stack() > 0:
            top = _pop_torch_function_stack()
            if top is mode:
                found = True
                break
            above.append(top)
    finally:
        for m in reversed(above):
            _push_on_torch_function_stack(m)
    return found


def declare_captured_criterion(engine, thresholds, strict: bool):
    """The diagnosis engine of a run whose losses are captured (no ``loss_fn``), told so.

    The run's facts are collected when ``watch()`` attaches, before any loss is seen; they
    declare the criterion as :data:`CAPTURED_FACTS` so that the classifier rules run on what
    the criterion and logits instruments record (cross-entropy calls only). If the criterion
    instrument is switched off, the engine is returned as it is (the rules say what they miss).
    """
    from instrument.diagnosis.engine import Engine

    facts = engine.facts
    if not facts.has("criterion") or facts.criterion is not None:
        return engine
    facts.criterion = dict(CAPTURED_FACTS)
    return Engine(facts, thresholds, console=True, strict=strict)
