"""What every framework integration needs: the torch optimizer inside a framework's wrapper, and
an info event for what an integration could not measure."""

from __future__ import annotations

import torch

from instrument.store.records import Event
from instrument.store.schema import INFO, is_reserved_scalar

INTEGRATION = "integration"
"""Event code of the integrations' notes (something a framework hides, so it is not recorded)."""

MAX_UNWRAP = 16
"""Wrappers followed at most (a cycle of ``.optimizer`` attributes must not hang)."""


def torch_optimizer(optimizer):
    """The ``torch.optim.Optimizer`` that does the work inside framework wrappers
    (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``, anything that
    keeps it in ``.optimizer``, nested). Torch's step hooks must go on this one: a wrapper
    calls its ``step()``, and accelerate's wrapper lacks the hook registries altogether."""
    seen = 0
    while optimizer is not None and seen < MAX_UNWRAP:
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer):
            break
        optimizer, seen = inner, seen + 1
    return optimizer


def note(monitor, message: str, step: int | None = None, suggestion: str | None = None) -> None:
    """Record an info event on ``monitor``'s run (rank 0's store under torch.distributed)."""
    monitor.writer.submit(Event(code=INTEGRATION, severity=INFO, message=message,
                                step=monitor.step_index if step is None else step,
                                suggestion=suggestion))


def metric_name(key: str, prefix: str, taken: tuple = ()) -> str:
    """The scalar name for a framework's metric ``key``: itself, unless avionics records that
    name itself (``monitor.log()`` refuses those) or the integration does (``taken``); then
    ``prefix + key``, so the framework's value is kept beside avionics' own."""
    return prefix + key if key in taken or is_reserved_scalar(key) else key
