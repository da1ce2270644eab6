"""Run a function on 2 CPU ranks (gloo) in fresh processes: the test harness for torch.distributed.

* Processes come from a ``forkserver`` that preloads torch once (a clean process: forking the
  pytest process itself after it used OpenMP can deadlock children), or ``fork`` when
  ``AVIONICS_DIST_START=fork`` (faster, for quiet machines).
* Rendezvous through a ``FileStore`` in a temporary directory: no ports, safe under parallel
  test workers.
* Each child uses 1 thread, initializes gloo with a finite timeout (a collective issued on only
  some ranks fails after ``pg_timeout`` instead of gloo's 30 minutes), runs ``fn(rank, world,
  *args)``, then ``barrier()`` and ``destroy_process_group()``.
* The parent collects results through a queue, kills children that outlive ``timeout`` and
  raises on any rank's error or bad exit code. A child that returned OK but aborted at exit
  (a rare gloo teardown abort, see docs/distributed.md) is reported as such.
"""

from __future__ import annotations

import datetime
import multiprocessing as mp
import os
import queue
import tempfile
import time
import traceback

PRELOAD = ["torch", "torch.distributed", "torch.nn", "torch._dynamo", "torch.distributed.fsdp",
           "torch.nn.parallel", "torch.distributed.tensor", "numpy", "pandas", "sqlite3"]
START_METHOD = os.environ.get("AVIONICS_DIST_START", "forkserver")
_configured = set()


class RankFailure(AssertionError):
    """A rank raised, timed out or exited badly."""


def _child(fn, rank, world, store_path, results, pg_timeout, args):
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                          LOCAL_WORLD_SIZE=str(world))
        store = dist.FileStore(store_path, world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=pg_timeout))
        try:
            out = fn(rank, world, *args)
            dist.barrier()
        finally:
            dist.destroy_process_group()
        results.put((rank, "ok", out))
    except BaseException:
        results.put((rank, "error", traceback.format_exc()))


def run_ranks(fn, *args, world: int = 2, timeout: float = 120.0, pg_timeout: float = 60.0,
              tmp_dir=None) -> list:
    """``[fn(0, world, *args), fn(1, world, *args), ...]``, each run in its own process.

    ``fn`` must be importable (a module-level function) and its result picklable.
    """
    ctx = mp.get_context(START_METHOD)
    if START_METHOD == "forkserver" and "preload" not in _configured:
        ctx.set_forkserver_preload(PRELOAD)
        _configured.add("preload")
    tmp = tmp_dir or tempfile.mkdtemp(prefix="avdist_")
    store_path = os.path.join(str(tmp), f"filestore_{os.getpid()}_{time.monotonic_ns()}")
    results = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(fn, r, world, store_path, results, pg_timeout, args),
                         daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    got, errors = {}, {}
    deadline = time.monotonic() + timeout
    try:
        while len(got) + len(errors) < world:
            left = deadline - time.monotonic()
            if left <= 0:
                raise queue.Empty
            rank, status, payload = results.get(timeout=left)
            (got if status == "ok" else errors)[rank] = payload
            if status != "ok":  # the others would wait for this rank: give them a moment
                deadline = min(deadline, time.monotonic() + 10)
    except queue.Empty:
        missing = sorted(set(range(world)) - set(got) - set(errors))
        errors["timeout"] = f"rank(s) {missing} gave no result within {timeout:.0f}s"
    finally:
        for p in procs:
            p.join(10)
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    exits = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode not in (0, None)}
    if errors:
        detail = "\n".join(f"--- rank {r} ---\n{e}" for r, e in errors.items())
        raise RankFailure(f"distributed test failed (exit codes {exits}):\n{detail}")
    if exits:
        raise RankFailure(f"all ranks returned OK but a process exited badly {exits} "
                          "(gloo teardown abort?)")
    return [got[r] for r in range(world)]
