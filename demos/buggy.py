"""A digits classifier with seeded bugs, each switched on by a flag: see what avionics says.

    python demos/buggy.py                      # the healthy baseline: no findings
    python demos/buggy.py --no-zero-grad       # one bug
    python demos/buggy.py --eval-mode --unshuffled --run runs/buggy
    python demos/buggy.py --list               # the bugs

avionics prints each finding once while training (through ``logging``); at the end the script
prints the report of ``avionics diagnose`` on the saved run and exits with its status (1 if a
finding is critical). Everything runs on a CPU in seconds (scikit-learn's bundled 8x8 digits).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import instrument  # noqa: E402
from instrument.diagnosis import report  # noqa: E402
from instrument.diagnosis.replay import diagnose  # noqa: E402

BUGS = {
    "no-zero-grad": "optimizer.zero_grad() is never called",
    "eval-mode": "model.eval() for validation, model.train() forgotten afterwards",
    "softmax-into-loss": "softmax applied before CrossEntropyLoss",
    "unshuffled": "batches drawn in label order (no shuffling)",
    "repeated-batch": "the same batch every step (next(iter(loader)) outside the loop)",
    "raw-pixels": "pixels fed unscaled, 0..255",
    "shuffled-labels": "labels misaligned with the images",
    "lr-high": "learning rate 100x too high",
    "lr-low": "learning rate 10000x too low",
    "short-cosine": "cosine schedule with T_max a third of the run",
    "dead-relu": "first layer initialized with bias -4 (its ReLUs never fire)",
    "new-head": "classifier head replaced after the optimizer was created",
    "log-features": "log() of standardized features (NaN for negative values)",
}

N_TRAIN = 1500


class Net(nn.Module):
    """An MLP with dropout for the 8x8 digits."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
                                  nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)
        self.log_features = False

    def forward(self, x):
        if self.log_features:
            x = torch.log(x)
        return self.head(self.body(x))


def load_digits(raw: bool):
    """Images (N, 8, 8) and labels; standardized unless ``raw`` (then 0..255 like 8-bit pixels)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32)
    x = x * 16 if raw else (x - x[:N_TRAIN].mean()) / x[:N_TRAIN].std()
    return x, torch.tensor(d.target)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, text in BUGS.items():
        p.add_argument(f"--{flag}", action="store_true", help=text)
    p.add_argument("--run", default="runs/buggy", help="run directory (replaced)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--list", action="store_true", help="list the bugs and exit")
    return p.parse_args(argv)


def train(args) -> str:
    """The training loop, with the requested bugs; returns the run directory."""
    on = {flag for flag in BUGS if getattr(args, flag.replace("-", "_"))}
    torch.manual_seed(args.seed)
    x, y = load_digits(raw="raw-pixels" in on)
    if "shuffled-labels" in on:
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(7))]
    model = Net()
    model.log_features = "log-features" in on
    if "dead-relu" in on:
        with torch.no_grad():
            model.body[1].bias.fill_(-4.0)
    lr = args.lr * (100 if "lr-high" in on else 1e-4 if "lr-low" in on else 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if "new-head" in on:
        model.head = nn.Linear(64, 10)  # the optimizer still holds the old head
    t_max = args.steps // 3 if "short-cosine" in on else args.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / t_max)) if s < args.steps else 0)
    criterion = nn.CrossEntropyLoss()
    order = torch.argsort(y[:N_TRAIN], stable=True)
    gen = torch.Generator().manual_seed(args.seed + 1)
    fixed = torch.randint(0, N_TRAIN, (64,), generator=gen)

    monitor = instrument.watch(model, optimizer, run=args.run, loss_fn=criterion,
                               overwrite=True)
    with monitor:
        for step in range(args.steps):
            if "unshuffled" in on:
                start = (step * 64) % (N_TRAIN - 64)
                idx = order[start:start + 64]
            elif "repeated-batch" in on:
                idx = fixed
            else:
                idx = torch.randint(0, N_TRAIN, (64,), generator=gen)
            if "no-zero-grad" not in on:
                optimizer.zero_grad()
            logits = model(x[idx])
            if "softmax-into-loss" in on:
                logits = logits.softmax(dim=1)
            loss = criterion(logits, y[idx])
            loss.backward()
            optimizer.step()
            schedule.step()
            monitor.log(loss=loss)
            if (step + 1) % 50 == 0:
                model.eval()
                with torch.no_grad():
                    acc = (model(x[N_TRAIN:]).argmax(1) == y[N_TRAIN:]).float().mean()
                monitor.log(val_acc=acc)
                if "eval-mode" not in on:
                    model.train()
    return monitor.run_dir


def main(argv=None) -> int:
    args = parse(argv)
    if args.list:
        for flag, text in BUGS.items():
            print(f"--{flag:18s} {text}")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = train(args)
    diag = diagnose(instrument.load(run_dir))
    print()
    print(report.text(diag), end="")
    return 1 if diag.critical else 0


if __name__ == "__main__":
    sys.exit(main())
