"""What to hook in a model, and how to read a module's output (tuples, dicts, dataclasses)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import torch
from torch import nn

from instrument.compiled import strip_prefix

ROOT_NAME = "(root)"
"""Layer name used for the model itself when it is a leaf (``named_modules()`` calls it "")."""

# Modules whose children are not called in their forward (they use the children's weights
# through functional calls), so they are measured as one unit.
ATOMIC_TYPES = (nn.MultiheadAttention,)

# Output ranges of bounded activations, for the saturation fraction: (low, high).
SATURATING_RANGES = {
    nn.Tanh: (-1.0, 1.0),
    nn.Sigmoid: (0.0, 1.0),
    nn.Softsign: (-1.0, 1.0),
    nn.Hardsigmoid: (0.0, 1.0),
}

# Modules whose 3-D outputs are (batch, channels, length): a "unit" is a channel (dim 1).
_CHANNELS_FIRST_1D = (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.InstanceNorm1d,
                      nn.MaxPool1d, nn.AvgPool1d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d,
                      nn.LPPool1d, nn.Dropout1d)


def display_name(name: str) -> str:
    """The layer name shown and stored for a module path from ``named_modules()`` (without
    the ``_orig_mod.`` of modules compiled by ``torch.compile``)."""
    name = strip_prefix(name)
    return name if name else ROOT_NAME


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every module that computes something itself, in model order.

    A leaf has no children; modules in :data:`ATOMIC_TYPES` count as leaves and their children
    are skipped.
    """
    out, skip = [], set()
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in skip):
            continue
        if isinstance(module, ATOMIC_TYPES):
            skip.add(name)
            out.append((display_name(name), module))
        elif not any(True for _ in module.children()):
            out.append((display_name(name), module))
    return out


def saturation_range(module: nn.Module) -> tuple[float, float] | None:
    """The output range of a bounded activation module, or None if it is not one."""
    if isinstance(module, nn.Hardtanh):  # also ReLU6
        return float(module.min_val), float(module.max_val)
    for cls, rng in SATURATING_RANGES.items():
        if isinstance(module, cls):
            return rng
    return None


def float_tensors(output) -> Iterator[torch.Tensor]:
    """Floating-point tensors in a module output: a tensor, or tuples/lists/dicts/dataclasses."""
    if isinstance(output, torch.Tensor):
        if output.is_floating_point() or output.is_complex():
            yield output
    elif isinstance(output, (tuple, list)):
        for item in output:
            yield from float_tensors(item)
    elif isinstance(output, dict):
        for item in output.values():
            yield from float_tensors(item)
    elif dataclasses.is_dataclass(output) and not isinstance(output, type):
        for f in dataclasses.fields(output):
            yield from float_tensors(getattr(output, f.name, None))


def primary_tensor(output) -> torch.Tensor | None:
    """The first real floating-point tensor of an output: what activation statistics describe."""
    for t in float_tensors(output):
        if not t.is_complex():
            return t
    return None


def unit_dim(module: nn.Module, out: torch.Tensor, previous: tuple | None) -> int:
    """The dimension that indexes units (features/channels) of ``out``, for dead-unit counts.

    ``previous`` is ``(shape, unit_dim)`` of the leaf module called just before, which an
    elementwise activation without parameters inherits (a ReLU after a Conv1d sees channels
    in dim 1; after a Linear on a sequence, features in the last dim).
    """
    nd = out.dim()
    if nd <= 2:
        return nd - 1 if nd else 0
    if nd >= 4:
        return 1
    if isinstance(module, _CHANNELS_FIRST_1D):
        return 1
    elementwise = not any(True for _ in module.parameters(recurse=False))
    if elementwise and previous is not None and tuple(previous[0]) == tuple(out.shape):
        return previous[1]
    return nd - 1
