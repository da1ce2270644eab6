"""Test helpers: tiny models and a plain training loop that tests run with and without watch()."""

from __future__ import annotations

import torch
from torch import nn

import instrument


def mlp(seed: int = 0, width: int = 16, act=nn.ReLU) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, width), act(), nn.Linear(width, width), act(),
                         nn.Linear(width, 3))


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(6 * 4 * 4, 5))


def batches(n: int, shape=(8,), classes: int = 3, batch: int = 16, seed: int = 1):
    """A fixed list of ``n`` (x, y) batches."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,),
                                                                      generator=g))
            for _ in range(n)]


def train(model, optimizer, data, monitor=None, criterion=None, accumulate: int = 1,
          log_before_step: bool = False):
    """A plain loop: zero_grad, forward, backward (``accumulate`` micro-batches), step, log."""
    criterion = criterion or nn.CrossEntropyLoss()
    losses = []
    for i in range(0, len(data), accumulate):
        optimizer.zero_grad()
        for x, y in data[i:i + accumulate]:
            loss = criterion(model(x), y) / accumulate
            loss.backward()
            if monitor is not None and log_before_step:
                monitor.log(loss=loss.detach() * accumulate)
        optimizer.step()
        if monitor is not None and not log_before_step:
            monitor.log(loss=loss.detach() * accumulate)
        losses.append(loss.detach())
    return losses


def watch(model, optimizer, run_dir, **kw):
    """watch() in strict mode with every instrument on every step unless overridden."""
    kw.setdefault("schedules", {"*": 1})
    return instrument.watch(model, optimizer, run=run_dir, strict=True, **kw)


def layer_frame(run, key):
    """``{step: {layer: value}}`` for one layer series."""
    df = run.layers(keys=[key])
    out = {}
    for step, layer, value in zip(df["step"], df["layer"], df["value"]):
        out.setdefault(int(step), {})[layer] = float(value)
    return out


def scalar_frame(run, key):
    """``{step: value}`` for one scalar series."""
    df = run.scalars(keys=[key])
    return {int(s): float(v) for s, v in zip(df["step"], df["value"])}
