"""One preallocated statistics buffer on the device, copied to the host once per logged step.

Instruments reserve named sections at set-up. During a step they write reductions into their
section's view (device-side ops only, no host sync). At the end of the step the monitor copies
the whole buffer to the host with a single non-blocking copy into pinned memory (CUDA) and hands
it to the writer thread, which waits for the copy and decodes it.

Each section also declares how ranks combine it under torch.distributed (``reduce``):

``"replicated"``  identical on every rank (e.g. DDP-averaged gradient norms); not combined.
``"sum"``         add over the data-parallel group (counts, sums, sums of squares).
``"min"``/``"max"`` elementwise extreme over the data-parallel group.
``"norm"``        per-tensor L2 norms of possibly sharded tensors: combined as sqrt(sum(x**2))
                  over the shard group only (FSDP), replicated under DDP. Rows are parameters
                  (row ``i`` is ``ctx.params[i]``).
``"shard_local"`` per-parameter rows of a statistic that cannot be combined across shards
                  (e.g. percentiles): kept for replicated parameters, not recorded (NaN) for
                  sharded ones.
``"keyed"``       rows ``[sum, count, key]`` (user scalars): sums and counts add up over the
                  data-parallel group among rows with the same key (a 52-bit hash of the name).
``"local"``       a per-rank value with no exact global combination (e.g. dead-unit counts,
                  which need the per-unit masks of every rank): not recorded in the global
                  view, kept in per-rank views.

Single-process runs never combine anything; see ``instrument/distributed`` for how these are
combined (one collective per logged step).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

REDUCE_KINDS = ("replicated", "sum", "min", "max", "norm", "shard_local", "keyed", "local")


@dataclass
class Section:
    """A named slice ``[offset, offset + size)`` of the buffer, viewed with ``shape``."""

    name: str
    shape: tuple
    fill: float
    reduce: str
    offset: int = 0
    view: torch.Tensor | None = None  # set by StatBuffer.allocate()

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def host(self, flat) -> object:
        """This section of a host copy (numpy array), in its shape."""
        return flat[self.offset: self.offset + self.size].reshape(self.shape)


class HostCopy:
    """A host copy of the buffer in flight; ``wait()`` on the consumer thread returns numpy."""

    def __init__(self, tensor: torch.Tensor, event, release):
        self._tensor, self._event, self._release = tensor, event, release

    def wait(self):
        if self._event is not None:
            self._event.synchronize()
        data = self._tensor.numpy().copy()
        self._release(self._tensor)
        return data


class StatBuffer:
    """The buffer and its sections. Reserve with :meth:`add`, then :meth:`allocate` once."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        # float64 so that sums of activations and squared norms keep their digits; devices
        # without float64 (MPS) fall back to float32.
        self.dtype = torch.float32 if self.device.type == "mps" else torch.float64
        self.sections: dict[str, Section] = {}
        self.tensor: torch.Tensor | None = None
        self._template: torch.Tensor | None = None
        self._pool: list = []
        self._lock = threading.Lock()
        self.host_transfers = 0  # counted for the tests and the benchmark

    def add(self, name: str, shape, fill: float = math.nan, reduce: str = "replicated") -> Section:
        """Reserve a section; call before :meth:`allocate` (or call it again to grow)."""
        if reduce not in REDUCE_KINDS:
            raise ValueError(f"reduce must be one of {REDUCE_KINDS}, got {reduce!r}")
        if name in self.sections:
            raise ValueError(f"buffer section {name!r} already exists")
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
        sec = self.sections[name] = Section(name, shape, float(fill), reduce)
        if self.tensor is not None:
            self.allocate()  # grow: rare (a new user scalar key)
        return sec

    def allocate(self) -> None:
        """(Re)create the device tensor and every section's view, keeping current values."""
        offset = 0
        for sec in self.sections.values():
            sec.offset = offset
            offset += sec.size
        old = self.tensor
        template = torch.empty(max(offset, 1), dtype=self.dtype)
        for sec in self.sections.values():
            template[sec.offset: sec.offset + sec.size] = sec.fill
        self._template = template.to(self.device)
        self.tensor = self._template.clone()
        if old is not None:
            self.tensor[: old.numel()].copy_(old)
        for sec in self.sections.values():
            sec.view = self.tensor[sec.offset: sec.offset + sec.size].view(sec.shape)
        with self._lock:
            self._pool = []

    def reset(self) -> None:
        """Every section back to its fill value (one device copy)."""
        self.tensor.copy_(self._template)

    def to_host(self) -> HostCopy:
        """Start the single device-to-host copy of this step; never waits for the device."""
        self.host_transfers += 1
        if self.device.type == "cuda":
            host = self._take_pinned()
            host.copy_(self.tensor, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return HostCopy(host, event, self._give_back)
        if self.device.type == "cpu":
            return HostCopy(self.tensor.clone(), None, lambda t: None)
        # other accelerators: a plain blocking copy (one sync per logged step)
        return HostCopy(self.tensor.to("cpu"), None, lambda t: None)

    def _take_pinned(self) -> torch.Tensor:
        with self._lock:
            for i, t in enumerate(self._pool):
                if t.numel() == self.tensor.numel():
                    return self._pool.pop(i)
        return torch.empty(self.tensor.numel(), dtype=self.dtype, pin_memory=True)

    def _give_back(self, t: torch.Tensor) -> None:
        with self._lock:
            if t.numel() == self.tensor.numel() and len(self._pool) < 8:
                self._pool.append(t)
