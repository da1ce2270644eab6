"""Per-step overhead of avionics against plain training (a benchmark, not a test).

Trains a small CNN (3x32x32 inputs, about 137k parameters) and an MLP (3072-256-128-10) at batch
128 with SGD+momentum, five ways: plain, with ``watch()``'s default schedules, with every
instrument on every step, with every instrument on every 10th step, and a *floor*: plain
training plus nothing but the three parameter-wide norm passes that default schedules make
every step (gradient norms before the step, weight and momentum-buffer norms after it; no
avionics at all). The floor is what exact every-step norms cost on the machine at hand: an
instrument panel cannot be cheaper than it. Configurations run in
interleaved rounds (shuffled order per round, one block of consecutive steps each, the first
round discarded as warm-up), so machine load hits them alike. The table gives the median
wall-clock time per step and its ratio to plain, and the mean's ratio (sparse schedules make
some steps dearer than others: the mean is what a run pays on average).

    python benchmarks/overhead.py                  # the README table
    python benchmarks/overhead.py --device cuda    # on a GPU
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
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import instrument  # noqa: E402


def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 256), nn.ReLU(),
                         nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))


MODELS = {"cnn": small_cnn, "mlp": mlp}
SETTINGS = {"plain": None, "default": {}, "every step": {"*": 1}, "every 10th step": {"*": 10},
            "floor: bare norms": "floor"}


class Config:
    """One model + optimizer (+ monitor) that can run blocks of steps."""

    def __init__(self, model_name, setting, device, logdir):
        torch.manual_seed(0)
        self.model = MODELS[model_name]().to(device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.crit = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(1)
        self.data = [(torch.randn(128, 3, 32, 32, generator=g).to(device),
                      torch.randint(0, 10, (128,), generator=g).to(device)) for _ in range(8)]
        self.device = device
        self.monitor = None
        schedules = SETTINGS[setting]
        self.floor = schedules == "floor"
        if schedules is not None and not self.floor:
            self.monitor = instrument.watch(self.model, self.opt, schedules=schedules,
                                            run=os.path.join(logdir, f"{model_name}-{setting}"))
        self.times = []
        self.i = 0

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def block(self, steps, record):
        for _ in range(steps):
            x, y = self.data[self.i % len(self.data)]
            self.i += 1
            self.sync()
            t0 = time.perf_counter()
            self.opt.zero_grad()
            loss = self.crit(self.model(x), y)
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
        self.opt.step()
        weights = torch._foreach_norm(params)
        bufs = torch._foreach_norm([self.opt.state[p]["momentum_buffer"] for p in params])
        self.norms = torch.stack(grads + weights + bufs).cpu()

    def close(self):
        if self.monitor is not None:
            self.monitor.close()


def run(models, rounds, block, device, logdir):
    results = []
    for model_name in models:
        configs = {s: Config(model_name, s, device, logdir) for s in SETTINGS}
        names = list(configs)
        for r in range(rounds + 1):
            random.shuffle(names)
            for name in names:
                configs[name].block(block, record=r > 0)  # round 0 warms up
        plain = statistics.median(configs["plain"].times)
        plain_mean = statistics.fmean(configs["plain"].times)
        for name, cfg in configs.items():
            med = statistics.median(cfg.times)
            mean = statistics.fmean(cfg.times)
            results.append({"model": model_name, "setting": name, "median_ms": med * 1e3,
                            "ratio": med / plain, "mean_ms": mean * 1e3,
                            "mean_ratio": mean / plain_mean, "steps": len(cfg.times),
                            "host_transfers": cfg.monitor.host_transfers if cfg.monitor else 0})
            cfg.close()
    return results


def table(results, device, threads):
    lines = ["| model | setting | median step (ms) | x plain (median) | x plain (mean) |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['setting']} | {r['median_ms']:.2f} | "
                     f"{r['ratio']:.3f} | {r['mean_ratio']:.3f} |")
    lines.append(f"\n{device}, {threads} thread(s), batch 128, "
                 f"{results[0]['steps']} interleaved steps per configuration")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="cnn,mlp")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--block", type=int, default=20, help="consecutive steps per round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as logdir:
        results = run(args.models.split(","), args.rounds, args.block, device, logdir)
    print(table(results, device, args.threads))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
