"""Layer and parameter names without the prefixes that data-parallel wrappers add.

``DDP(model)`` names its parameters ``module.<name>``; FSDP1 inserts ``_fsdp_wrapped_module``
at every wrapped level, activation checkpointing ``_checkpoint_wrapped_module``,
``torch.compile`` ``_orig_mod``, FSDP1's CPU offload ``_offload_wrapped_module``. The store
records the names of the model the user wrote (``0.weight``), the same on every rank and in a
single-process run of the same model.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from instrument.modules import ROOT_NAME

INTERNAL_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod",
                  "_offload_wrapped_module")
"""Name components that only wrappers create: removed wherever they occur."""

ROOT_WRAPPER_ATTRS = {
    "DistributedDataParallel": "module",
    "DataParallel": "module",
    "OptimizedModule": "_orig_mod",
    "FullyShardedDataParallel": "_fsdp_wrapped_module",
    "CheckpointWrapper": "_checkpoint_wrapped_module",
    "OffloadWrapper": "_offload_wrapped_module",
}
"""Wrapper class name -> the attribute holding the wrapped model. Only removed at the root
(``module`` is an ordinary name elsewhere), for each wrapper in a chain of them."""


def root_prefix(model: nn.Module) -> list:
    """The leading name components that the chain of wrappers around the root adds."""
    parts = []
    while True:
        attr = ROOT_WRAPPER_ATTRS.get(type(model).__name__)
        inner = getattr(model, attr, None) if attr else None
        if not isinstance(inner, nn.Module):
            return parts
        parts.append(attr)
        model = inner


def clean(name: str, prefix: Sequence[str] = ()) -> str:
    """``name`` without the root wrappers' ``prefix`` and without wrapper-internal parts."""
    parts = name.split(".") if name and name != ROOT_NAME else []
    n = len(prefix)
    if n and parts[:n] == list(prefix):
        parts = parts[n:]
    parts = [p for p in parts if p not in INTERNAL_PARTS]
    return ".".join(parts)


def clean_all(names: Sequence[str], prefix: Sequence[str] = (), root: str = "") -> list:
    """Cleaned names, unique: a name that would collide with another keeps its original.

    ``root`` replaces a name that cleans to nothing (the wrapped model itself).
    """
    cleaned = [clean(n, prefix) or root for n in names]
    seen: dict = {}
    for c in cleaned:
        seen[c] = seen.get(c, 0) + 1
    return [c if seen[c] == 1 and c else n for n, c in zip(names, cleaned)]
