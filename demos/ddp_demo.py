"""Data-parallel training of a small CNN on the 8x8 digits with avionics attached (torchrun).

    torchrun --standalone --nproc_per_node=2 demos/ddp_demo.py --out runs/ddp
    torchrun --standalone --nproc_per_node=2 demos/ddp_demo.py --wrapper fsdp2 --per-rank
    avionics dashboard runs                                   # then open the run

Runs on CPUs with gloo and on GPUs with nccl (one GPU per process: ``--nproc_per_node`` at most
the number of GPUs). Every rank calls ``watch()`` and ``close()``; rank 0 writes the run store
with values combined over all ranks (as if one process trained on the global batch), and with
``--per-rank`` every rank also writes its own store under ``<run>/ranks/``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import instrument  # noqa: E402


def load_data(synthetic: bool = False):
    """The digits (scikit-learn) as standardized (N, 1, 8, 8) tensors, or a synthetic stand-in
    of the same shape (``--synthetic``, or when scikit-learn is not installed)."""
    try:
        if synthetic:
            raise ImportError
        from sklearn.datasets import load_digits
    except ImportError:
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 10, (1797,), generator=g)
        x = torch.randn(1797, 1, 8, 8, generator=g) + y.view(-1, 1, 1, 1) * 0.3
        return x, y
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    return (x - x.mean()) / x.std(), torch.tensor(data.target, dtype=torch.long)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def wrap(model: nn.Module, kind: str, device: torch.device) -> nn.Module:
    """Wrap for data parallelism: DDP, FSDP2 (fully_shard) or FSDP1 (use_orig_params=True)."""
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if kind == "fsdp2":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        for sub in model:
            if isinstance(sub, (nn.Linear, nn.Conv2d)):
                fully_shard(sub, mesh=mesh)
        return fully_shard(model, mesh=mesh)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return FullyShardedDataParallel(model, device_id=device, use_orig_params=True,
                                        auto_wrap_policy=ModuleWrapPolicy({nn.Linear, nn.Conv2d}))
    raise ValueError(f"unknown wrapper {kind!r}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/ddp", help="run directory (rank 0 writes it; not "
                   "--run, which torchrun would take for its own --run-path)")
    p.add_argument("--wrapper", choices=("ddp", "fsdp2", "fsdp1"), default="ddp")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64, help="global batch size")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--per-rank", action="store_true", help="each rank also writes its own store")
    p.add_argument("--synthetic", action="store_true", help="synthetic digits-shaped data "
                   "(skips importing scikit-learn: a faster start)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per process (0: torch's)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per step (rank 1 "
                   "sleeps twice as long: a visible straggler)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    if "RANK" not in os.environ:
        sys.exit("launch with torchrun, e.g. torchrun --standalone --nproc_per_node=2 "
                 "demos/ddp_demo.py (see the module docstring)")
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        sys.exit(f"--batch {args.batch} must be a multiple of the world size {world}")

    torch.manual_seed(0)  # the same initial weights on every rank
    x, y = load_data(args.synthetic)
    n_train = 1500
    model = wrap(make_model().to(device), args.wrapper, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    monitor = instrument.watch(model, optimizer, run=args.out, per_rank=args.per_rank)
    if rank == 0:
        print(f"{world} ranks ({dist.get_backend()}, {args.wrapper}); recording into "
              f"{monitor.run_dir}", flush=True)

    per_rank = args.batch // world
    g = torch.Generator().manual_seed(1)  # the same global batches on every rank
    with monitor:
        for step in range(args.steps):
            idx = torch.randint(0, n_train, (args.batch,), generator=g)
            mine = idx[rank * per_rank:(rank + 1) * per_rank]  # this rank's share
            xb, yb = x[mine].to(device), y[mine].to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = criterion(logits, yb)
            loss.backward()
            optimizer.step()
            monitor.log(loss=loss, acc=(logits.argmax(1) == yb).float().mean())
            if args.delay:
                time.sleep(args.delay * (2 if rank == 1 else 1))
    if rank == 0:
        print(f"done: {args.steps} steps recorded in {monitor.run_dir}", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
