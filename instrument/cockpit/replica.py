"""A private copy of the user's model that replays a step's forward pass for curvature probes.

Why a copy: the probe must not disturb training. The copy has its own parameters (synchronized
from the user's before each probe) and its own buffers, so BatchNorm running statistics of the
user's model are never updated; it carries none of avionics' (or BackPACK's) hooks, so the
monitor does not see the replay as a training forward; gradients are taken with
``torch.autograd.grad``, so no ``.grad`` is ever written on the user's parameters. The replay
runs inside ``torch.random.fork_rng`` with the RNG state captured when the user's forward
started: dropout draws the same masks as in training, and the user's RNG stream continues
exactly as if the probe had not run.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from instrument.modules import float_tensors, leaf_modules

OWN_HOOK_MODULES = ("instrument.", "backpack.")


def _ours(fn) -> bool:
    mod = getattr(fn, "__module__", None) or getattr(type(fn), "__module__", "")
    return any(mod.startswith(p) for p in OWN_HOOK_MODULES)


def strip_copy(model: nn.Module) -> nn.Module:
    """``deepcopy(model)`` without avionics' and BackPACK's hooks (the user's own hooks, e.g. of
    old-style weight norm, are kept). Bound-method hooks of ours are never deep-copied."""
    memo = {}
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            d = getattr(m, attr, None)
            if d:
                kept = OrderedDict((k, v) for k, v in d.items() if not _ours(v))
                memo[id(d)] = copy.deepcopy(kept)
    replica = copy.deepcopy(model, memo)
    for r in replica.modules():
        for attr in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called",
                     "_forward_pre_hooks_with_kwargs"):
            d = getattr(r, attr, None)
            if d:
                for key in [k for k in d if k not in getattr(r, "_forward_hooks", {})
                            and k not in getattr(r, "_forward_pre_hooks", {})]:
                    del d[key]
        for name in ("input0", "output"):  # BackPACK's stored I/O, if the user extended it
            if name in r.__dict__:
                del r.__dict__[name]
    for p in replica.parameters():
        p.grad = None
    return replica


class Replica:
    """The copy, kept in step with the user's model (parameters, buffers, train/eval mode)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.copy = strip_copy(model)
        self._src_params = list(model.parameters())
        self._dst_params = list(self.copy.parameters())
        self._src_buffers = [b for b in model.buffers()]
        self._dst_buffers = [b for b in self.copy.buffers()]
        self._modules = list(zip(model.modules(), self.copy.modules()))
        self.leaves = [m for _, m in leaf_modules(self.copy)]

    def sync(self) -> None:
        """Copy the user's current parameters, buffers and modes (no autograd, no hooks)."""
        with torch.no_grad():
            if self._src_params:
                torch._foreach_copy_(self._dst_params, self._src_params)
            for d, s in zip(self._dst_buffers, self._src_buffers):
                d.copy_(s)
        for src, dst in self._modules:
            dst.training = src.training

    def param_map(self) -> dict:
        """User parameter id -> the copy's parameter."""
        return {id(s): d for s, d in zip(self._src_params, self._dst_params)}


def replay_spec(output, crit_input) -> tuple | None:
    """How the criterion's input derives from the model's output: ``(index, shape)`` of the
    output tensor (in :func:`float_tensors` order) that is, or is a view of, the criterion's
    input; None if it is neither (e.g. further computation in the loop)."""
    if not torch.is_tensor(crit_input):
        return None
    outs = list(float_tensors(output))
    for i, t in enumerate(outs):
        if t is crit_input:
            return i, None
    for i, t in enumerate(outs):
        if (t.numel() == crit_input.numel() and t.untyped_storage().data_ptr()
                == crit_input.untyped_storage().data_ptr()
                and t.storage_offset() == crit_input.storage_offset()):
            return i, tuple(crit_input.shape)
    return None


def with_input(args, kwargs, value):
    """The criterion's arguments with its first (input) argument replaced by ``value``."""
    if args:
        return (value,) + tuple(args[1:]), kwargs
    key = next(iter(kwargs))
    return args, {**kwargs, key: value}


class fork_rng_at:
    """Context manager: fork the RNG streams and start them at a captured state."""

    def __init__(self, state: dict | None, device: torch.device):
        self.state = state
        devices = [device] if device.type == "cuda" else []
        self.fork = torch.random.fork_rng(devices=devices)

    def __enter__(self):
        self.fork.__enter__()
        if self.state is not None:
            torch.set_rng_state(self.state["cpu"])
            if "cuda" in self.state:
                torch.cuda.set_rng_state(self.state["cuda"])
        return self

    def __exit__(self, *exc):
        return self.fork.__exit__(*exc)
