"""Real (tiny, CPU, seconds) training runs recorded by avionics, for the dashboard's browser
tests: a model with several metrics of the user's own, optionally going NaN at a given step."""

from __future__ import annotations

import torch
from torch import nn

import instrument

METRICS = tuple(f"metric_{i}" for i in range(9))
"""The user's own keys passed to monitor.log() besides the loss."""


def train(run_dir: str, steps: int = 30, *, nan_at: int | None = None, seed: int = 0) -> None:
    """Train a 2-layer MLP for ``steps`` steps with a criterion (so the diagnosis facts
    ``criterion/*`` and ``input/*`` are recorded too), logging the loss and :data:`METRICS`;
    from step ``nan_at`` on, one input is NaN, so every value downstream is NaN."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    with instrument.watch(model, opt, run=run_dir, loss_fn=criterion, strict=True) as mon:
        for step in range(steps):
            x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
            if nan_at is not None and step >= nan_at:
                x[0, 0] = float("nan")
            loss = criterion(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            mon.log(loss=loss, **{k: float(i + step) for i, k in enumerate(METRICS)})
