"""Who writes what: rank 0 writes the run store; with ``per_rank=True`` every rank also writes
its own store under ``<run>/ranks/rank-<rank>/``. Two processes never write one file."""

from __future__ import annotations

import os

from instrument.store.reader import store_path

RANKS_DIR = "ranks"


def rank_dir(run_dir: str, rank: int) -> str:
    """The run directory of ``rank``'s own store inside the run directory."""
    return os.path.join(run_dir, RANKS_DIR, f"rank-{rank:05d}")


def fresh_rank_store(run_dir: str, rank: int) -> str:
    """Create ``rank``'s directory and remove a store a previous run left there (this rank's
    file only); return the store path."""
    directory = rank_dir(run_dir, rank)
    os.makedirs(directory, exist_ok=True)
    path = store_path(directory)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return path


class NullWriter:
    """The writer of a rank that records nothing itself (not rank 0, no per-rank store)."""

    path = None
    alive = False
    observers: list = []

    def submit(self, item) -> None:
        pass

    def set_meta(self, **values) -> None:
        pass

    def flush(self, timeout: float = 30.0) -> None:
        pass

    def close(self, status: str = "finished", **meta) -> None:
        pass
