"""Device-side reductions shared by instruments. Nothing here synchronizes with the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

try:  # torch.distributed may be absent from a build
    from torch.distributed.tensor import DTensor
except Exception:  # pragma: no cover
    DTensor = ()


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), or ``t`` itself. Norms of the local shard are
    combined across the shard group by the distributed reducer, never read as global."""
    return t.to_local() if isinstance(t, DTensor) else t


class IndexCache:
    """Device index tensors for the index patterns a section is written with (built once each)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cache: dict = {}

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        key = tuple(indices)
        t = self._cache.get(key)
        if t is None:
            if len(self._cache) > 64:  # patterns that never repeat: do not grow without bound
                self._cache.clear()
            t = self._cache[key] = torch.tensor(key, dtype=torch.long, device=self.device)
        return t


def sum_and_sumsq(x: torch.Tensor):
    """``(sum(x), sum(x**2))`` as float32 scalars on x's device. A float32 sum and dot are
    several times cheaper than float64 reductions on CPU, and precise enough for statistics that
    are then accumulated in a float64 buffer."""
    if x.dtype == torch.float32 and x.is_contiguous():
        flat = x.view(-1)
        return flat.sum(), torch.dot(flat, flat)
    return (torch.sum(x, dtype=torch.float32),
            torch.linalg.vector_norm(x, dtype=torch.float32).square())


_WIDE = (torch.float64, torch.complex128)


def norms(tensors: Sequence[torch.Tensor], ord: float = 2.0) -> list:
    """Per-tensor vector norms (float32 or wider), one fused launch for dense tensors.

    Sparse tensors are handled one by one through their values. Complex tensors (the
    weights of Fourier layers) are normed as their moduli: the 2-norm over the real view (real
    and imaginary parts), other orders over ``abs()``.
    """
    if any(t.is_complex() for t in tensors):
        tensors = [_modulus_view(t, ord) if t.is_complex() else t for t in tensors]
    if all(t.layout == torch.strided and t.dtype not in _WIDE and t.numel() for t in tensors):
        # the usual case (dense float32/half parameters and gradients): one pass, one launch
        return list(torch._foreach_norm(tensors, ord, dtype=torch.float32)) if tensors else []
    out = [None] * len(tensors)
    # empty tensors (an FSDP2 rank can hold an empty shard): every norm of nothing is 0, and
    # the fused kernel refuses ord=inf on them ("no identity")
    for i, t in enumerate(tensors):
        if t.numel() == 0:
            out[i] = torch.zeros((), dtype=torch.float32, device=t.device)
    dense_pos = [i for i, t in enumerate(tensors) if t.layout == torch.strided and out[i] is None]
    if dense_pos:
        dense = [tensors[i] for i in dense_pos]
        wide = [t for t in dense if t.dtype in (torch.float64, torch.complex128)]
        if wide:  # keep float64 inputs at their precision
            res = [torch.linalg.vector_norm(t, ord) for t in dense]
        else:
            res = torch._foreach_norm(dense, ord, dtype=torch.float32)
        for i, r in zip(dense_pos, res):
            out[i] = r
    for i, t in enumerate(tensors):
        if out[i] is None:
            vals = t.coalesce().values() if t.is_sparse else t.values()
            out[i] = torch.linalg.vector_norm(vals.abs() if vals.is_complex() else vals.float(),
                                              ord)
    return out


def write_at(view: torch.Tensor, cache: IndexCache, indices: Sequence[int],
             values: Sequence[torch.Tensor]) -> None:
    """``view[indices] = stack(values)`` on the device (values may live on other devices)."""
    if not values:
        return
    device = view.device
    stacked = torch.stack([v if v.device == device else v.to(device, non_blocking=True)
                           for v in values])
    if len(indices) == view.shape[0] and list(indices) == list(range(view.shape[0])):
        view.copy_(stacked)
    else:
        view.index_copy_(0, cache.get(indices), stacked.to(view.dtype))



def _modulus_view(t: torch.Tensor, ord: float) -> torch.Tensor:
    """A real tensor with the norms of complex ``t`` (see :func:`norms`)."""
    if t.layout != torch.strided:
        return t  # sparse: normed through its values below
    if ord == 2:
        return torch.view_as_real(t.resolve_conj())  # no copy: |z|^2 = re^2 + im^2
    return t.abs()
