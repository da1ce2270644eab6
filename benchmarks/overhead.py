"""Per-step overhead of avionics against plain training: the model x optimizer x setting matrix
(a benchmark, not a test).

Models (``benchmarks/models.py``): an MLP and a small CNN on 3x32x32 inputs at batch 128, a
nanoGPT-shaped GPT (4 blocks, d=128, tied embeddings, the loss inside ``forward``, batch 16 x 64
tokens) and a ResNet-18-shaped CNN with BatchNorm (batch 16). Optimizers: SGD with momentum
and AdamW. Settings: plain; ``watch()``'s default schedules; every instrument every step; every
instrument every 10th step; the *floor*; and, for the GPT, compiled (``torch.compile``) plain
and compiled with default schedules (its ratio is to compiled plain).

The floor is plain training plus nothing but the parameter-wide norm passes that default
schedules make every step, with no avionics at all: gradient norms before the step, weight
norms after it, and the update norms (SGD: momentum-buffer norms; AdamW: a parameter copy
before the step and the norms of the difference after it). No instrument panel that records
exact norms every step can be cheaper than it on the machine at hand.

Configurations run in interleaved rounds (shuffled order per round, one block of consecutive
steps each, the first round discarded as warm-up), so machine load hits them alike. The table
gives the median wall-clock time per step and its ratio to plain, and the mean's ratio (sparse
schedules make some steps dearer than others: the mean is what a run pays on average).

Before the matrix, the start-up cost is measured and asserted (``benchmarks/startup.py``).

    python benchmarks/overhead.py                              # the README table
    python benchmarks/overhead.py --models gpt --optimizers adamw --rounds 3   # a quick look
    python benchmarks/overhead.py --device cuda                # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from models import MODELS  # noqa: E402

import instrument  # noqa: E402

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.01, momentum=0.9),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.1),
}
# setting -> (schedules: None = no avionics, "floor" = the bare norm passes; compiled?)
SETTINGS = {
    "plain": (None, False),
    "default": ({}, False),
    "every step": ({"*": 1}, False),
    "every 10th step": ({"*": 10}, False),
    "floor: bare norms": ("floor", False),
    "compiled plain": (None, True),
    "compiled default": ({}, True),
}
COMPILED_MODELS = ("gpt",)  # compiling on CPU takes a while: only where the table needs it
BASELINE = {"compiled default": "compiled plain"}  # ratios are to "plain" otherwise


class Config:
    """One model + optimizer + setting (+ monitor) that can run blocks of steps."""

    def __init__(self, model_name, opt_name, setting, device, logdir):
        spec = MODELS[model_name]
        torch.manual_seed(0)
        self.model = spec.build().to(device)
        self.opt = OPTIMIZERS[opt_name](self.model.parameters())
        self.loss = spec.loss
        g = torch.Generator().manual_seed(1)
        self.data = [tuple(t.to(device) for t in spec.make_batch(g)) for _ in range(8)]
        self.device = device
        self.monitor = None
        schedules, compiled = SETTINGS[setting]
        self.floor = schedules == "floor"
        if schedules is not None and not self.floor:
            run = os.path.join(logdir, f"{model_name}-{opt_name}-{setting}".replace(" ", "_"))
            self.monitor = instrument.watch(self.model, self.opt, schedules=schedules, run=run)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.times = []
        self.i = 0

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def block(self, steps, record):
        for _ in range(steps):
            batch = self.data[self.i % len(self.data)]
            self.i += 1
            self.sync()
            t0 = time.perf_counter()
            self.opt.zero_grad()
            loss = self.loss(self.forward, batch)
            loss.backward()
            if self.floor:
                self.bare_norms_step()
            else:
                self.opt.step()
            if self.monitor is not None:
                self.monitor.log(loss=loss)
            self.sync()
            if record:
                self.times.append(time.perf_counter() - t0)

    @torch.no_grad()
    def bare_norms_step(self):
        """The optimizer step between the norm passes that every-step norms need, nothing else."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        grads = torch._foreach_norm([p.grad for p in params])
        sgd = isinstance(self.opt, torch.optim.SGD)
        before = None if sgd else torch._foreach_mul(params, 1.0)
        self.opt.step()
        weights = torch._foreach_norm(params)
        if sgd:
            updates = torch._foreach_norm([self.opt.state[p]["momentum_buffer"] for p in params])
        else:
            torch._foreach_sub_(before, params)
            updates = torch._foreach_norm(before)
        self.norms = torch.stack(grads + weights + updates).cpu()

    def close(self):
        if self.monitor is not None:
            self.monitor.close()


def settings_for(model_name, wanted):
    return [s for s in wanted if not SETTINGS[s][1] or model_name in COMPILED_MODELS]


def run_matrix(models, optimizers, settings, rounds, block, device, logdir, out=print):
    results = []
    for model_name in models:
        for opt_name in optimizers:
            names = settings_for(model_name, settings)
            configs = {s: Config(model_name, opt_name, s, device, logdir) for s in names}
            for r in range(rounds + 1):
                random.shuffle(names)
                for name in names:
                    configs[name].block(block, record=r > 0)  # round 0 warms up (compiles)
            rows = summarize(model_name, opt_name, configs)
            for cfg in configs.values():
                cfg.close()
            for row in rows:
                out(row_line(row))
            results += rows
    return results


def summarize(model_name, opt_name, configs):
    rows = []
    for name, cfg in configs.items():
        base = configs.get(BASELINE.get(name, "plain"))
        med, mean = statistics.median(cfg.times), statistics.fmean(cfg.times)
        rows.append({
            "model": model_name, "optimizer": opt_name, "setting": name,
            "median_ms": med * 1e3, "mean_ms": mean * 1e3, "steps": len(cfg.times),
            "ratio": med / statistics.median(base.times) if base else float("nan"),
            "mean_ratio": mean / statistics.fmean(base.times) if base else float("nan"),
            "host_transfers": cfg.monitor.host_transfers if cfg.monitor else 0})
    return rows


HEADER = ("| model | optimizer | setting | median step (ms) | x plain (median) | x plain (mean) |\n"
          "|---|---|---|---|---|---|")


def row_line(r):
    return (f"| {r['model']} | {r['optimizer']} | {r['setting']} | {r['median_ms']:.2f} | "
            f"{r['ratio']:.3f} | {r['mean_ratio']:.3f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help=f"of {','.join(MODELS)}")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help="comma-separated, of: " + ", ".join(SETTINGS))
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=20, help="consecutive steps per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up check")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        p.error(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    if "plain" not in settings:
        settings.insert(0, "plain")
    if "compiled default" in settings and "compiled plain" not in settings:
        settings.append("compiled plain")
    if not args.no_startup:
        import startup

        print(startup.report(startup.check()), flush=True)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as logdir:
        results = run_matrix(args.models.split(","), args.optimizers.split(","), settings,
                             args.rounds, args.block, device, logdir,
                             out=lambda line: print(line, flush=True))
    print(f"\n{device}, {args.threads} thread(s), {results[0]['steps']} interleaved steps per "
          f"configuration ({args.rounds} rounds of {args.block})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
