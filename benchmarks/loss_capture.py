"""What capturing functional losses costs (``watch()`` without ``loss_fn``).

The capture is a ``TorchFunctionMode`` entered only on the steps where an instrument takes loss
calls (the ``criterion``/``logits`` schedules, Cockpit's per-sample instruments), so a step
without it runs exactly as with a criterion module. On a capture step every torch function on
the training thread makes one extra Python call. This script times, interleaved and in
shuffled order (median per-step milliseconds, CPU, one thread):

* ``plain``: no avionics;
* ``mode``: no avionics, but the capture mode (with a sink that only counts) entered before the
  forward and left before the optimizer step: the capture's own price on a capture step;
* ``hooked``: ``watch(loss_fn=nn.CrossEntropyLoss())`` with only the ``criterion`` instrument,
  every step (a module hook: no capture);
* ``captured``: the same loop with ``F.cross_entropy`` and no ``loss_fn``, ``criterion`` every
  step (the capture on every step);
* ``off``: no ``loss_fn`` and ``criterion`` switched off (no capture step at all);

on a small MLP (batch 128) and on a nanoGPT-shaped model (loss inside ``forward``).

    python benchmarks/loss_capture.py [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import instrument  # noqa: E402
from instrument import losses  # noqa: E402
from tests.instrument.tiny_gpt import GPT, Config, token_batches  # noqa: E402

SETTINGS = ("plain", "mode", "hooked", "captured", "off")


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(128, 64, generator=g), torch.randint(0, 10, (128,), generator=g))
            for _ in range(8)]
    return model, data, None


def _gpt():
    torch.manual_seed(0)
    cfg = Config(vocab=64, block=32, layers=2, heads=4, embd=64)
    return GPT(cfg), token_batches(8, 16, 32, 64), cfg


class Setting:
    """One model under one setting, stepped a round at a time."""

    def __init__(self, kind, setting, root):
        self.model, self.data, self.cfg = _mlp() if kind == "mlp" else _gpt()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.crit = nn.CrossEntropyLoss()
        self.setting = setting
        self.monitor = None
        if setting not in ("plain", "mode"):
            sched = {"*": None, "criterion": None if setting == "off" else 1}
            self.monitor = instrument.watch(
                self.model, self.opt, run=os.path.join(root, f"{kind}-{setting}"),
                schedules=sched, loss_fn=self.crit if setting == "hooked" else None)
        self.times: list = []
        self.i = 0
        self.seen = 0
        self.mode = losses.LossCapture(self._count) if setting == "mode" else None

    def _count(self, *call):
        self.seen += 1

    def loss(self, x, y):
        if self.cfg is not None:  # the loss inside forward
            return self.model(x, y)[1]
        if self.setting == "hooked":
            return self.crit(self.model(x), y)
        return F.cross_entropy(self.model(x), y)

    def round(self, steps):
        for _ in range(steps):
            x, y = self.data[self.i % len(self.data)]
            self.i += 1
            t0 = time.perf_counter()
            self.opt.zero_grad()
            if self.mode is not None:
                losses.enter(self.mode)
            loss = self.loss(x, y)
            loss.backward()
            if self.mode is not None:
                losses.leave(self.mode)
            self.opt.step()
            if self.monitor is not None:
                self.monitor.log(loss=loss)
            self.times.append(time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps per setting")
    parser.add_argument("--round", type=int, default=20, help="steps per interleaved round")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for kind in ("mlp", "gpt"):
            settings = [Setting(kind, s, root) for s in SETTINGS]
            for s in settings:  # warm-up round, discarded
                s.round(args.round)
                s.times.clear()
            rng = random.Random(0)
            for _ in range(args.steps // args.round):
                rng.shuffle(settings)
                for s in settings:
                    s.round(args.round)
            by = {s.setting: statistics.median(s.times) * 1e3 for s in settings}
            for s in settings:
                if s.monitor is not None:
                    s.monitor.close()
            for name in SETTINGS:
                rows.append((kind, name, by[name], by[name] / by["plain"]))
    print("| model | setting | median step (ms) | × plain |")
    print("|---|---|---|---|")
    for kind, name, ms, ratio in rows:
        print(f"| {kind} | {name} | {ms:.2f} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
