"""Training loops run on every rank by the distributed tests, and the brute-force single-process
reference they are compared with (plain torch on the global batch, no avionics)."""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

IN, HIDDEN, MID = 16, 24, 5
LR = 0.05
TANH_SATURATION = 0.97  # |tanh| above this counts as saturated (SATURATION_MARGIN = 0.03)


@dataclass
class Case:
    """One distributed run: wrapper, optimizer, steps, micro-batches per step, options."""

    wrapper: str = "ddp"  # ddp | fsdp2 | hsdp | fsdp1 | fsdp1-flat | none
    optimizer: str = "sgd"  # sgd (with momentum) | adam
    steps: int = 3
    accumulate: int = 1
    batch: int = 16  # global rows per micro-batch
    per_rank: bool = False
    nan_at: tuple | None = None  # (step, rank): a NaN input row on that rank at that step
    extra_logs: bool = False  # rank-dependent log() keys and orders
    count_collectives: bool = False
    rank1_logs_every: int = 1  # rank 1 logs the loss only every n steps
    break_on_rank1: str | None = None  # this instrument raises on rank 1 from step 1 on
    sleep_rank1: float = 0.0  # seconds rank 1 sleeps between steps (a straggler)
    many_keys: int = 0  # log this many keys k0, k1, ... (rank 1 in reverse order)
    schedules: dict = field(default_factory=lambda: {"activations": 1})


def make_model() -> nn.Module:
    """Linear(24 -> 5) shards unevenly over 2 ranks (3/2 rows), Linear(5 -> 1) leaves rank 1
    an empty shard; Tanh has a saturation fraction, ReLU zeros and dead units."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, MID), nn.Tanh(),
                         nn.Linear(MID, 1))


def make_optimizer(case: Case, params):
    if case.optimizer == "adam":
        return torch.optim.Adam(params, lr=LR)
    return torch.optim.SGD(params, lr=LR, momentum=0.9)


def batch(step: int, micro: int, case: Case):
    """The global micro-batch ``micro`` of ``step`` (all ranks' rows)."""
    g = torch.Generator().manual_seed(1000 * step + micro)
    x = torch.randn(case.batch, IN, generator=g) * 2
    y = torch.randn(case.batch, 1, generator=g)
    return x, y


def shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def wrap(case: Case, model: nn.Module, world: int) -> nn.Module:
    if case.wrapper == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)
    if case.wrapper in ("fsdp2", "hsdp"):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = (init_device_mesh("cpu", (world,)) if case.wrapper == "fsdp2" else
                init_device_mesh("cpu", (world, 1), mesh_dim_names=("replicate", "shard")))
        for sub in model:
            if isinstance(sub, nn.Linear):
                fully_shard(sub, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if case.wrapper in ("fsdp1", "fsdp1-flat"):
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        return FullyShardedDataParallel(model, device_id=torch.device("cpu"),
                                        use_orig_params=case.wrapper == "fsdp1",
                                        auto_wrap_policy=ModuleWrapPolicy({nn.Linear}))
    return model


def sync_context(case: Case, model, last: bool):
    """Gradient accumulation: skip the gradient synchronization except on the last micro-batch."""
    if last or case.accumulate == 1:
        if case.wrapper in ("fsdp2", "hsdp"):
            model.set_requires_gradient_sync(True)
        return contextlib.nullcontext()
    if case.wrapper in ("fsdp2", "hsdp"):
        model.set_requires_gradient_sync(False)
        return contextlib.nullcontext()
    if case.wrapper in ("ddp", "fsdp1", "fsdp1-flat"):
        return model.no_sync()
    return contextlib.nullcontext()


class _Counter:
    """Counts Python-level torch.distributed collectives while active (patched functions)."""

    NAMES = ("all_reduce", "all_gather", "all_gather_single", "all_gather_into_tensor",
             "broadcast", "reduce", "gather", "scatter", "reduce_scatter", "reduce_scatter_tensor",
             "all_to_all", "all_to_all_single", "all_gather_object", "broadcast_object_list",
             "barrier")

    def __init__(self):
        import torch.distributed as dist

        self.dist, self.calls, self.saved = dist, [], {}

    def __enter__(self):
        for name in self.NAMES:
            fn = getattr(self.dist, name, None)
            if fn is None:
                continue
            self.saved[name] = fn

            def counted(*a, _fn=fn, _name=name, **k):
                self.calls.append(_name)
                return _fn(*a, **k)

            setattr(self.dist, name, counted)
        return self

    def __exit__(self, *exc):
        for name, fn in self.saved.items():
            setattr(self.dist, name, fn)


def train(rank: int, world: int, case: Case, run: str) -> dict:
    """The training loop on one rank, watched by avionics; returns facts for the test."""
    import instrument

    model = wrap(case, make_model(), world)
    opt = make_optimizer(case, model.parameters())
    strict = case.break_on_rank1 is None  # fail-open is what the broken case tests
    monitor = instrument.watch(model, opt, run=run, strict=strict, schedules=case.schedules,
                               per_rank=case.per_rank, flush_interval=0.05)
    if case.break_on_rank1 and rank == 1:
        inst = next(i for i in monitor.instruments if i.name == case.break_on_rank1)
        original = inst.forward

        def broken(index, module, output):
            if monitor.step_index >= 1:
                raise RuntimeError("broken on purpose")
            return original(index, module, output)

        inst.forward = broken
    counter = _Counter() if case.count_collectives else contextlib.nullcontext()
    local_losses = []
    with counter:
        for step in range(case.steps):
            opt.zero_grad(set_to_none=True)
            step_losses = []
            for micro in range(case.accumulate):
                x, y = batch(step, micro, case)
                xs, ys = shard(x, rank, world), shard(y, rank, world)
                if case.nan_at == (step, rank):
                    xs = xs.clone()
                    xs[0, 0] = math.nan
                last = micro == case.accumulate - 1
                with sync_context(case, model, last):
                    loss = nn.functional.mse_loss(model(xs), ys)
                    (loss / case.accumulate).backward()
                if rank != 1 or step % case.rank1_logs_every == 0:
                    monitor.log(loss=loss)
                step_losses.append(loss.item())
                if case.extra_logs:  # rank-dependent keys, in rank-dependent order
                    keys = ["b", "a"] if rank == 1 else ["a", "b"]
                    for k in keys:
                        monitor.log({k: float(rank + 1) * (1 if k == "a" else 10)})
                    if rank == 1:
                        monitor.log(only_rank1=5.0)
                    if rank == 0 and step == 1:
                        monitor.log(only_rank0=7.0)
                order = range(case.many_keys)
                for k in (reversed(order) if rank == 1 else order):
                    monitor.log({f"k{k}": torch.tensor(float(k * (rank + 1)))})
            opt.step()
            local_losses.append(float(np.mean(step_losses)))
            if rank == 1 and case.sleep_rank1:
                time.sleep(case.sleep_rank1)
        monitor.close()
    calls = list(counter.calls) if case.count_collectives else None
    writer_path = getattr(monitor.writer, "path", None)
    return {"rank": rank, "pid": os.getpid(), "writer": writer_path, "calls": calls,
            "collectives": monitor.reducer.collectives if monitor.reducer else 0,
            "steps": monitor.step_index + 1, "local_losses": local_losses,
            "param_names": list(monitor.ctx.param_names),
            "module_names": list(monitor.ctx.module_names)}


# ---- the brute-force reference: one process, the global batch, plain torch ----------------------
def reference(case: Case, world: int = 2) -> dict:
    """Per step: what one process sees on the global batch, computed directly with torch."""
    model = make_model()
    opt = make_optimizer(case, model.parameters())
    names = [n for n, _ in model.named_parameters()]
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    out = {"params": names, "modules": [n for n, _ in leaves], "steps": []}
    for step in range(case.steps):
        opt.zero_grad(set_to_none=True)
        captured = {n: [] for n, _ in leaves}
        handles = [m.register_forward_hook(lambda mod, a, o, n=n: captured[n].append(o.detach()))
                   for n, m in leaves]
        losses, local = [], {r: [] for r in range(world)}
        for micro in range(case.accumulate):
            x, y = batch(step, micro, case)
            pred = model(x)
            loss = nn.functional.mse_loss(pred, y)
            (loss / case.accumulate).backward()
            losses.append(loss.item())
            for r in range(world):
                local[r].append(nn.functional.mse_loss(shard(pred, r, world), shard(y, r, world)).item())
        for h in handles:
            h.remove()
        rec = {"loss": float(np.mean(losses)),
               "rank_loss": [float(np.mean(local[r])) for r in range(world)],
               "grad_norm": {}, "weight_norm": {}, "update_norm": {},
               "act": {}, "rank_dead": {r: {} for r in range(world)},
               "rank_obs": {r: {} for r in range(world)}}
        for n, p in model.named_parameters():
            g = p.grad.double()
            rec["grad_norm"][n] = g.norm().item()
        before = {n: p.detach().clone().double() for n, p in model.named_parameters()}
        opt.step()
        for n, p in model.named_parameters():
            rec["weight_norm"][n] = p.detach().double().norm().item()
            rec["update_norm"][n] = (p.detach().double() - before[n]).norm().item()
        if case.optimizer == "adam":
            rec["adaptive_lr"] = {}
            for n, p in model.named_parameters():
                st = opt.state[p]
                v = st["exp_avg_sq"].reshape(-1) / (1 - 0.999 ** float(st["step"]))
                vals = LR / (v.sqrt() + 1e-8)
                rec["adaptive_lr"][n] = torch.quantile(vals.float(), torch.tensor([0.1, 0.5, 0.9])).tolist()
        for n, _ in leaves:
            a = torch.cat([t.double().reshape(-1) for t in captured[n]])
            rec["act"][n] = {
                "mean": a.mean().item(), "std": a.std().item(), "min": a.min().item(),
                "max": a.max().item(), "zero_frac": (a == 0).double().mean().item(),
                "nonfinite": float(sum(not torch.isfinite(t).all() for t in captured[n])),
                "saturation_frac": ((a.abs() > TANH_SATURATION).double().mean().item()
                                    if n == "3" else math.nan)}
            for r in range(world):  # dead units on each rank's own rows (per-rank stores)
                rows = torch.cat([shard(t, r, world) for t in captured[n]])
                dead = (rows == 0).all(dim=0)
                rec["rank_dead"][r][n] = dead.double().mean().item()
                rec["rank_obs"][r][n] = rows.numel() / dead.numel()  # values per unit
        out["steps"].append(rec)
    return out
