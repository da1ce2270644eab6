"""A synthetic run of any length and width, written through the real store writer.

For the dashboard's payload/latency budgets (10^6 steps x 200 layers) and for trying the
dashboard on a long run without training one::

    python -m tests.dashboard.synthetic runs/synthetic --steps 1000000 --layers 200

Every step logs the scalars a real run has (loss, accuracy, learning rate, global norms) and the
per-layer gradient norm; the other per-layer series are written every ``--every`` steps, as the
default instrument schedules do for costly statistics. Values are smooth trends plus noise, a
few layers misbehave on purpose, and one NaN event is recorded. Imports no torch.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time

import numpy as np

from instrument.store import schema
from instrument.store.errors import StoreError
from instrument.store.reader import load, store_path
from instrument.store.records import Event, LayerValues, StepData
from instrument.store.writer import StoreWriter

Keys = schema.Keys
CHUNK = 4096
"""Steps generated (vectorized) and flushed at a time."""


def meta(name: str, layers: int, steps: int) -> dict:
    """Metadata like a real run's: a stack of ``layers`` Linear layers under AdamW."""
    per = 256 * 256 + 256
    return {"name": name, "start_time": time.time() - steps * 0.01,
            "model": {"class": "SyntheticMLP", "parameters": per * layers,
                      "trainable": per * layers, "training": True,
                      "layers": [{"name": f"blocks.{i}", "type": "Linear", "params": per}
                                 for i in range(layers)]},
            "optimizer": {"class": "AdamW", "defaults": {"lr": 3e-4},
                          "param_groups": [{"params": layers, "lr": 3e-4, "betas": [0.9, 0.999],
                                            "eps": 1e-8, "weight_decay": 0.01}]},
            "settings": {"synthetic": True}, "instruments": ["synthetic"]}


def write(run_dir: str, steps: int = 1_000_000, layers: int = 200, every: int = 100,
          seed: int = 0) -> str:
    """Write the run into ``run_dir`` (created; an existing store there is replaced).

    Returns:
        ``run_dir``.
    """
    os.makedirs(run_dir, exist_ok=True)
    path = store_path(run_dir)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    rng = np.random.default_rng(seed)
    params = [f"blocks.{i}.weight" for i in range(layers)]
    modules = [f"blocks.{i}" for i in range(layers)]
    scale = np.exp(rng.normal(0.0, 0.7, layers))  # each layer its own gradient scale
    dying = rng.random(layers) < 0.05             # a few layers whose units die over time
    writer = StoreWriter(path, meta(os.path.basename(run_dir), layers, steps),
                         flush_interval=3600.0)
    t0 = time.time() - steps * 0.01
    for start in range(0, steps, CHUNK):
        stop = min(start + CHUNK, steps)
        s = np.arange(start, stop)
        progress = s / max(steps - 1, 1)
        lr = 3e-4 * np.minimum(1.0, s / (0.01 * steps + 1)) * 0.5 * (1 + np.cos(math.pi * progress))
        loss = 2.3 * np.exp(-4 * progress) + 0.1 + 0.05 * rng.standard_normal(len(s)) ** 2
        gn = scale[None, :] * (0.2 + np.exp(-3 * progress))[:, None] * np.exp(
            0.3 * rng.standard_normal((len(s), layers)))
        for i, step in enumerate(s):
            data = StepData(int(step), wall_time=t0 + step * 0.01, scalars={
                Keys.LOSS: float(loss[i]), "acc": float(1 - 0.9 * math.exp(-5 * progress[i])),
                Keys.per_group(Keys.LR, 0): float(lr[i]),
                Keys.GRAD_NORM_TOTAL: float(np.sqrt(np.sum(gn[i] ** 2))),
                Keys.UPDATE_RATIO_TOTAL: float(lr[i] * 3.0)},
                layers={Keys.GRAD_NORM: LayerValues(params, gn[i])})
            if step % every == 0:
                data.layers.update(_sparse(rng, params, modules, gn[i], lr[i], progress[i],
                                           dying))
            writer.submit(data)
        if start <= steps // 2 < stop:
            bad = modules[layers // 2]
            writer.submit(Event(schema.NONFINITE, schema.CRITICAL,
                                f"Non-finite (NaN/Inf) output first at module '{bad}' (Linear) "
                                f"at step {steps // 2} (synthetic).", step=steps // 2, layer=bad,
                                evidence={"tensor": "activation"}))
        writer.flush()
    writer.close(steps=steps)
    return run_dir


def _sparse(rng, params, modules, gn, lr, progress, dying) -> dict:
    n = len(params)
    ratio = lr * 3.0 * np.exp(0.5 * rng.standard_normal(n))
    dead = np.clip(np.where(dying, progress, 0.02) + 0.01 * rng.random(n), 0, 1)
    return {
        Keys.UPDATE_RATIO: LayerValues(params, ratio),
        Keys.EFFECTIVE_LR: LayerValues(params, ratio / np.maximum(gn, 1e-12)),
        Keys.ACT_MEAN: LayerValues(modules, 0.1 * rng.standard_normal(n)),
        Keys.ACT_STD: LayerValues(modules, np.exp(0.3 * rng.standard_normal(n))),
        Keys.ACT_DEAD_FRAC: LayerValues(modules, dead),
    }


VERSION = 2
"""Bumped when :func:`write` or the store format changes, so cached runs are made again
(2: scalars in one wide series)."""


def cached(steps: int = 1_000_000, layers: int = 200, every: int = 100,
           root: str = "") -> str:
    """A synthetic run kept between sessions (it takes minutes to write), made if missing.

    Args:
        root: where cached runs live; default ``$AVIONICS_BENCH_DIR`` or the temp directory.

    Returns:
        The run directory (its parent is a log directory holding only this run).
    """
    root = root or os.environ.get("AVIONICS_BENCH_DIR") or os.path.join(
        tempfile.gettempdir(), "avionics-bench")
    name = f"synthetic-{steps}x{layers}-every{every}-v{VERSION}"
    final = os.path.join(root, name, "run")
    if os.path.isfile(os.path.join(final, "complete")) and _usable(final, steps):
        return final
    os.makedirs(root, exist_ok=True)
    work = tempfile.mkdtemp(prefix=name + ".", dir=root)  # atomic: write, then rename
    write(os.path.join(work, "run"), steps, layers, every)
    open(os.path.join(work, "run", "complete"), "w").close()
    try:
        os.rename(work, os.path.join(root, name))
    except OSError:  # another process finished first (or a stale partial copy is there)
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
        os.rename(work, os.path.join(root, name))
    return final


def _usable(run_dir: str, steps: int) -> bool:
    """A cached run this avionics reads as written: every step, and the scalars."""
    try:
        run = load(run_dir, integrity=False)
        return run.step_range() == (0, steps - 1) and Keys.LOSS in run.keys(schema.SCALAR)
    except StoreError:
        return False


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--layers", type=int, default=200)
    p.add_argument("--every", type=int, default=100, help="steps between sparse layer series")
    args = p.parse_args(argv)
    t = time.time()
    write(args.run_dir, args.steps, args.layers, args.every)
    print(f"wrote {args.run_dir} in {time.time() - t:.0f}s")


if __name__ == "__main__":
    main()
