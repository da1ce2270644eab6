"""Cost of avionics' one collective per step under torch.distributed, against the step time.

    python benchmarks/collective.py                 # launches 2 ranks with torchrun (gloo/CPU)
    python benchmarks/collective.py --nproc 4 --quick
    torchrun --standalone --nproc_per_node=2 benchmarks/collective.py --worker   # same, by hand

For three DDP models (13 k, 282 k and 6.4 M parameters) it measures, per step (medians):

* ``plain``      a training step without avionics;
* ``avionics, no session``  watched, but each rank records alone (the distributed session
                 bypassed: what single-process avionics costs here);
* ``avionics``   the same step watched with the default schedules;
* ``commit``     avionics' per-step commit on this rank: packing the header, the all_gather,
                 the combination (what the run store's ``rank/sync_time`` records);
* ``all_gather`` / ``all_reduce``  the bare collective on a vector of the same size (float64);
* ``separate``   one all_reduce per buffer section instead (what one collective saves).

Rank 0 prints a markdown table and writes ``benchmarks/out/collective.json``. Threads: 1 per
process. The numbers are noisy on a loaded machine; compare medians over quiet runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

MODELS = {  # name -> (layer widths, batch per rank, steps, quick steps)
    "tiny": ([32, 128, 64, 10], 16, 300, 60),
    "medium": ([256, 512, 256, 10], 32, 150, 40),
    "large": ([1024, 2048, 2048, 10], 32, 40, 12),
}


def launch(args) -> int:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={args.nproc}", os.path.abspath(__file__), "--worker"]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.call(cmd, env=env)


def median_ms(samples) -> float:
    return statistics.median(samples) * 1e3


def time_collective(fn, repeat: int) -> float:
    import torch.distributed as dist

    for _ in range(5):
        fn()
    dist.barrier()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return median_ms(out)


def bench_model(name, widths, batch, steps, device, tmp) -> dict:
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel

    import instrument
    from instrument.distributed import session
    from instrument.distributed.reducer import _gather

    rank, world = dist.get_rank(), dist.get_world_size()
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    x = torch.randn(batch, widths[0], device=device)
    y = torch.randint(0, widths[-1], (batch,), device=device)

    def run(watch: bool, local_only: bool = False):
        torch.manual_seed(0)
        model = DistributedDataParallel(nn.Sequential(*layers[:-1]).to(device))
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        monitor = None
        if watch and local_only:  # A/B: the same instruments without the distributed session
            hidden = session.active_world
            session.active_world = lambda: None
            try:
                monitor = instrument.watch(model, opt, run=os.path.join(tmp, f"{name}-{rank}"),
                                           overwrite=True)
            finally:
                session.active_world = hidden
        elif watch:
            monitor = instrument.watch(model, opt, run=os.path.join(tmp, f"{name}"), overwrite=True)
        times, commits, phases = [], [], []
        for step in range(steps):
            t = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if monitor is not None:
                monitor.log(loss=loss)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            if monitor is not None and monitor.reducer is not None and step > 0:
                commits.append(monitor.reducer.sync_time)  # the commit inside this step
                phases.append(monitor.reducer.phases)
        reducer = monitor.reducer if monitor else None
        payload = reducer.payload_size if reducer else 0
        sections = len(reducer.gathered) + 1 if reducer else 0
        if monitor is not None:
            monitor.close()
        warm = max(3, steps // 10)
        split = ([median_ms([p[k] for p in phases[warm:]]) for k in range(3)] if phases
                 else None)
        return (median_ms(times[warm:]), (median_ms(commits[warm:]) if commits else None),
                payload, sections, split)

    plain, _, _, _, _ = run(False)
    local, _, _, _, _ = run(True, local_only=True)
    watched, commit, payload, sections, split = run(True)
    plain2, _, _, _, _ = run(False)  # bracket the watched runs: the machine's drift shows
    vec = torch.randn(payload, dtype=torch.float64, device=device)
    out = torch.empty(world * payload, dtype=torch.float64, device=device)
    chunks = [c.clone() for c in vec.tensor_split(sections)]
    repeat = 200
    gather = time_collective(lambda: _gather(out, vec), repeat)
    reduce = time_collective(lambda: dist.all_reduce(vec.clone()), repeat)
    separate = time_collective(lambda: [dist.all_reduce(c) for c in chunks], repeat // 4)
    params = sum(p.numel() for p in nn.Sequential(*layers[:-1]).parameters())
    return {"model": name, "params": params, "batch_per_rank": batch, "world": world,
            "payload_floats": payload, "sections": sections,
            "plain_ms": min(plain, plain2), "plain_ms_runs": [plain, plain2],
            "avionics_local_ms": local, "avionics_ms": watched, "commit_ms": commit, "pack_ms": split[0],
            "collective_ms": split[1], "combine_ms": split[2], "all_gather_ms": gather,
            "all_reduce_ms": reduce, "separate_ms": separate}


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_list = [tmp]
        dist.broadcast_object_list(tmp_list, src=0)  # rank 0's directory for the run stores
        for name, (widths, batch, steps, quick) in MODELS.items():
            row = bench_model(name, widths, batch, quick if args.quick else steps, device,
                              tmp_list[0])
            every = [None] * dist.get_world_size()
            dist.all_gather_object(every, row)  # every rank's commit split (who waits)
            row["collective_ms_per_rank"] = [r["collective_ms"] for r in every]
            row["commit_ms_per_rank"] = [r["commit_ms"] for r in every]
            rows.append(row)
            dist.barrier()
    if rank == 0:
        backend = dist.get_backend()
        print(f"\n{rows[0]['world']} ranks, {backend}, {device.type}, 1 thread per rank; medians\n")
        print("| model | params | payload floats | step plain ms | step avionics, no session ms "
              "| step avionics ms "
              "| rank 0 commit ms (pack / collective incl. wait / combine) | commit / step "
              "| collective incl. wait, per rank ms "
              "| bare all_gather ms | bare all_reduce ms | one all_reduce per section ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            share = r["commit_ms"] / r["avionics_ms"]
            print(f"| {r['model']} | {r['params']:,} | {r['payload_floats']} | {r['plain_ms']:.2f} "
                  f"| {r['avionics_local_ms']:.2f} | {r['avionics_ms']:.2f} | {r['commit_ms']:.3f} ({r['pack_ms']:.3f} / "
                  f"{r['collective_ms']:.3f} / {r['combine_ms']:.3f}) | {share:.1%} "
                  f"| {' / '.join(f'{c:.3f}' for c in r['collective_ms_per_rank'])} "
                  f"| {r['all_gather_ms']:.3f} | {r['all_reduce_ms']:.3f} | {r['separate_ms']:.3f} |")
        out = os.path.join(HERE, "out")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "collective.json"), "w") as fh:
            json.dump({"backend": backend, "device": device.type, "rows": rows}, fh, indent=1)
    dist.barrier()
    dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help="run as a torchrun worker")
    p.add_argument("--nproc", type=int, default=2, help="ranks to launch")
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = p.parse_args()
    if args.worker or "RANK" in os.environ:
        worker(args)
        return 0
    return launch(args)


if __name__ == "__main__":
    sys.exit(main())
