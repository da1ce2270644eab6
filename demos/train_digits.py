"""Train a small CNN on scikit-learn's bundled 8x8 digits with avionics attached.

    python demos/train_digits.py --run runs/digits            # a few seconds on a CPU
    python demos/train_digits.py --steps 2000 --delay 0.05    # slower, to watch it live
    python demos/train_digits.py --dashboard --delay 0.02     # and watch it in the browser

Only two lines differ from a plain PyTorch loop: ``instrument.watch(...)`` and ``monitor.log(...)``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import instrument  # noqa: E402


def load_digits_tensors():
    """The digits as standardized (N, 1, 8, 8) float tensors and integer labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    x = (x - x.mean()) / x.std()
    return x, torch.tensor(data.target, dtype=torch.long)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/digits", help="run directory")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--delay", type=float, default=0.0, help="seconds to sleep per step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dashboard", action="store_true",
                   help="serve the live dashboard while training, and after it until Ctrl+C")
    p.add_argument("--port", type=int, default=None, help="dashboard port (default: 8050 or "
                   "the next free one)")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    x, y = load_digits_tensors()
    n_train = 1500
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    criterion = nn.CrossEntropyLoss()

    monitor = instrument.watch(model, optimizer, run=args.run,
                               dashboard=(args.port or True) if args.dashboard else False)
    print(f"recording into {monitor.run_dir}")
    with monitor:
        for step in range(args.steps):
            idx = torch.randint(0, n_train, (args.batch,))
            optimizer.zero_grad()
            logits = model(x[idx])
            loss = criterion(logits, y[idx])
            loss.backward()
            optimizer.step()
            scheduler.step()
            acc = (logits.argmax(1) == y[idx]).float().mean()
            monitor.log(loss=loss, acc=acc)
            if step % 50 == 0 or step == args.steps - 1:
                with torch.no_grad():
                    val = (model(x[n_train:]).argmax(1) == y[n_train:]).float().mean()
                monitor.log(val_acc=val)
                print(f"step {step:5d}  loss {loss.item():.3f}  val_acc {val.item():.3f}")
            if args.delay:
                time.sleep(args.delay)
    if monitor.dashboard is not None:
        monitor.dashboard.wait()  # the run is finished; keep showing it until Ctrl+C
    return monitor.run_dir


if __name__ == "__main__":
    main()
