"""Activation checkpointing (``torch.utils.checkpoint``): forwards run again inside backward.

A checkpointed segment does not keep its activations; backward recomputes them by running the
segment's forward once more. The forward hooks of its leaf modules fire again then, with grad
enabled:

* ``use_reentrant=False`` (torch's recommendation; what Hugging Face's
  ``gradient_checkpointing_enable()`` uses): the segment ran normally in the forward pass and
  was measured there. Measured again, each activation statistic would count every sample twice
  (and NaN sums, forward order, the inputs likewise). So hooks that run inside backward measure
  nothing: the statistics are those of the forward pass.
* ``use_reentrant=True``: the forward pass runs the segment under ``torch.no_grad()`` (such
  forwards are evaluation to the monitor, not measured) and its only grad-enabled forward is the
  recomputation inside backward, in backward order. Those modules get no activation statistics,
  forward order or forward NaN origin; one info event per run names them (gradient, weight,
  update and optimizer statistics are unaffected).
"""

from __future__ import annotations

import torch

from instrument import unobserved

RECOMPUTED_UNOBSERVED = "recomputed_unobserved"
"""Event code: leaf modules whose only grad-enabled forward ran inside backward."""

_REENTRANT_NODE = "CheckpointFunctionBackward"
"""The autograd node that runs a ``use_reentrant=True`` segment's recomputation."""


def in_backward() -> bool:
    """True while autograd's engine runs a backward pass on this thread."""
    return torch._C._current_graph_task_id() != -1


def reentrant_recompute() -> bool:
    """Inside backward: is this the recomputation of a ``use_reentrant=True`` segment?"""
    node = torch._C._current_autograd_node()
    return node is not None and type(node).__name__ == _REENTRANT_NODE


def unobserved_event(ctx, indices: list, instruments: list, step: int):
    """The info event naming the modules whose forward only a reentrant checkpoint ran."""
    return unobserved.event(
        RECOMPUTED_UNOBSERVED, [ctx.module_names[i] for i in indices],
        "run inside torch.utils.checkpoint(..., use_reentrant=True) segments",
        ": their forward runs without grad and again inside backward, so", instruments, step,
        suggestion="Checkpoint with use_reentrant=False (torch's recommendation): avionics "
                   "then measures the forward pass as without checkpointing.")
