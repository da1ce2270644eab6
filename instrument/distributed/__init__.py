"""Correct instruments under torch.distributed (DDP, FSDP2/HSDP, FSDP1): one collective per
logged step, one writer, per-rank views.

``watch()`` uses this package when a process group of two or more ranks is up; without one
nothing here runs (no collectives, no overhead). The parts:

* :mod:`.topology`  which wrapper, and over which ranks each parameter's pieces add up;
* :mod:`.naming`    names without wrapper prefixes (``module.``, ``_fsdp_wrapped_module.``, ...);
* :mod:`.reducer`   the per-step all_gather and the combination of every buffer section;
* :mod:`.rankview`  per-rank timings, losses and NaN origins; per-rank stores;
* :mod:`.rankinfo`  rank, world size, local rank, node and host of every process;
* :mod:`.writers`   rank 0 writes the run store, each rank optionally its own;
* :mod:`.session`   the glue ``watch()`` calls.

See docs/distributed.md.
"""

from instrument.distributed.session import Session, active_world, join

__all__ = ["Session", "active_world", "join"]
