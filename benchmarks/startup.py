"""Start-up cost of avionics in a training process (a benchmark with asserted targets).

Measured in fresh interpreters that have already imported torch and built the model and its
optimizer, as a training script has by the time it calls ``watch()``: the time of
``import instrument`` + ``watch()``, and of ``close()``. The first interpreter warms the
file caches and is not counted; the median of the next ones is. Also checked: the training
process never imports pandas or dash (the store reader, the diagnosis report and the dashboard
import them lazily, only in processes that read).

    python benchmarks/startup.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

WATCH_TARGET_S = 0.5
CLOSE_TARGET_S = 1.0
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

CHILD = r"""
import json, sys, time
import torch
from torch import nn
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
t0 = time.perf_counter()
import instrument
monitor = instrument.watch(model, opt, run=sys.argv[1])
t1 = time.perf_counter()
for _ in range(3):
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(torch.randn(8, 64)), torch.randint(0, 10, (8,)))
    loss.backward()
    opt.step()
    monitor.log(loss=loss)
t2 = time.perf_counter()
monitor.close()
t3 = time.perf_counter()
heavy = sorted(m for m in ("pandas", "dash", "plotly", "flask") if m in sys.modules)
print(json.dumps({"watch_s": t1 - t0, "close_s": t3 - t2, "heavy_imports": heavy}))
"""


def measure(runs: int = 5) -> list:
    out = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # warm caches include the bytecode caches
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs + 1):
            res = subprocess.run([sys.executable, "-c", CHILD, os.path.join(tmp, f"r{i}")],
                                 capture_output=True, text=True, env=env, check=True)
            if i:  # the first run warms the caches
                out.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return out


def check(runs: int = 5) -> dict:
    """Measure, and raise AssertionError if a target is missed."""
    rows = measure(runs)
    result = {"watch_s": statistics.median(r["watch_s"] for r in rows),
              "close_s": statistics.median(r["close_s"] for r in rows),
              "heavy_imports": sorted({m for r in rows for m in r["heavy_imports"]})}
    assert result["watch_s"] <= WATCH_TARGET_S, \
        f"import instrument + watch() took {result['watch_s']:.3f} s (target {WATCH_TARGET_S} s)"
    assert result["close_s"] <= CLOSE_TARGET_S, \
        f"close() took {result['close_s']:.3f} s (target {CLOSE_TARGET_S} s)"
    assert not result["heavy_imports"], \
        f"the training process imported {result['heavy_imports']}"
    return result


def report(result: dict) -> str:
    return (f"start-up: import instrument + watch() {result['watch_s']:.3f} s (target "
            f"<= {WATCH_TARGET_S} s), close() {result['close_s']:.3f} s (target <= "
            f"{CLOSE_TARGET_S} s), pandas/dash imported: {result['heavy_imports'] or 'none'}")


if __name__ == "__main__":
    print(report(check()))
