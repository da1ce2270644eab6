"""Small real run stores for the dashboard tests, written through the store's own writer.

Values are simple closed forms of (step, layer), so tests can compute the expected numbers
independently.
"""

from __future__ import annotations

import os
import time

import numpy as np

from instrument.store import schema
from instrument.store.reader import store_path
from instrument.store.records import Event, LayerValues, StepData
from instrument.store.writer import StoreWriter

Keys = schema.Keys
PARAMS = ("0.weight", "0.bias", "2.weight", "2.bias")
MODULES = ("0", "1", "2")
ACT_EVERY = 5
WALL0 = time.time() - 3600.0
"""Wall time of step 0 (an hour ago), so run durations look like a real run's."""


def loss(step):
    """The loss written at ``step``."""
    return 2.0 / (1.0 + 0.1 * np.asarray(step, dtype=np.float64))


def grad_norm(step, j):
    """Gradient norm of parameter ``j`` at ``step``."""
    return (j + 1) * 0.5 + 0.01 * (np.asarray(step, dtype=np.float64) % 7)


def update_ratio(step, j):
    """Update/weight ratio of parameter ``j`` at ``step``."""
    return 1e-3 * (j + 1) / (1.0 + 0.01 * np.asarray(step, dtype=np.float64))


def act(key, step, m):
    """Activation statistic ``key`` of module ``m`` at ``step``."""
    s = np.asarray(step, dtype=np.float64)
    return {Keys.ACT_MEAN: 0.1 * (m - 1) + 0.001 * s, Keys.ACT_STD: 1.0 + 0.1 * m + 0.0 * s,
            Keys.ACT_DEAD_FRAC: np.minimum(1.0, 0.01 * m * s / 10.0)}[key]


def step_data(step: int, wall0: float = WALL0) -> StepData:
    """Everything recorded at ``step``."""
    d = StepData(step, wall_time=wall0 + 0.5 * step, scalars={
        Keys.LOSS: float(loss(step)), "acc": 0.5 + 0.001 * step,
        Keys.per_group(Keys.LR, 0): 0.1, Keys.GRAD_NORM_TOTAL: float(np.sqrt(sum(
            grad_norm(step, j) ** 2 for j in range(len(PARAMS))))),
        Keys.UPDATE_RATIO_TOTAL: 1e-3})
    d.layers[Keys.GRAD_NORM] = LayerValues(PARAMS, [grad_norm(step, j) for j in range(len(PARAMS))])
    d.layers[Keys.UPDATE_RATIO] = LayerValues(PARAMS, [update_ratio(step, j)
                                                       for j in range(len(PARAMS))])
    d.layers[Keys.EFFECTIVE_LR] = LayerValues(PARAMS, [0.1 / (j + 1) for j in range(len(PARAMS))])
    if step % ACT_EVERY == 0:
        for key in (Keys.ACT_MEAN, Keys.ACT_STD, Keys.ACT_DEAD_FRAC):
            d.layers[key] = LayerValues(MODULES, [act(key, step, m) for m in range(len(MODULES))])
    return d


def meta(name: str) -> dict:
    """Metadata like a real run's."""
    return {"name": name, "start_time": WALL0,
            "model": {"class": "Sequential", "parameters": 1234, "trainable": 1234,
                      "layers": [{"name": m, "type": "Linear", "params": 10} for m in MODULES]},
            "optimizer": {"class": "SGD", "param_groups": [{"params": 4, "lr": 0.1,
                                                            "momentum": 0.9}]}}


def write_run(run_dir: str, steps: int = 40, *, events=(), close: bool = True,
              start: int = 0) -> StoreWriter:
    """A run with ``steps`` steps (from ``start``) in ``run_dir``; returns the writer.

    ``close=False`` leaves the writer open (a "running" run) for the test to continue.
    """
    os.makedirs(run_dir, exist_ok=True)
    writer = StoreWriter(store_path(run_dir), meta(os.path.basename(run_dir)),
                         flush_interval=0.05)
    for s in range(start, start + steps):
        writer.submit(step_data(s))
    for e in events:
        writer.submit(e)
    writer.flush()
    if close:
        writer.close(steps=start + steps)
    return writer


def nonfinite_event(step: int, layer: str = "1") -> Event:
    """A NaN/Inf event like the nonfinite instrument's."""
    return Event(schema.NONFINITE, schema.CRITICAL, f"Non-finite output first at module "
                 f"'{layer}' at step {step}.", step=step, layer=layer,
                 suggestion="lower the learning rate", wall_time=time.time())
