"""A SIGKILLed training process leaves a readable store holding everything flushed up to about a
second before the kill, and the run reads as crashed once its heartbeat stops."""

import os
import signal
import subprocess
import sys
import time

import pytest

import instrument

CHILD = r"""
import sys, time
sys.path.insert(0, {root!r})
import torch
from torch import nn
import instrument
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
mon = instrument.watch(model, opt, run={run!r}, flush_interval=0.25)
for step in range(100000):
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    mon.log(loss=loss)
    print(step, flush=True)
    time.sleep(0.02)
"""


@pytest.mark.slow
def test_sigkill_leaves_a_readable_crashed_run(run_dir):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(root=root, run=run_dir)],
                            stdout=subprocess.PIPE, text=True)
    last_printed = -1
    deadline = time.time() + 120
    while last_printed < 60 and time.time() < deadline:
        last_printed = int(proc.stdout.readline())
    assert last_printed >= 60, "the training child did not start"
    reader = instrument.load(run_dir)
    assert reader.meta["status"] == "running"
    t_kill = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read().split()
    last_printed = int(rest[-1]) if rest else last_printed
    last_stored = reader.last_step()
    # the step record of step k is committed when step k+1 starts; flushes every 0.25 s
    steps_per_second = 1 / 0.02
    assert last_stored >= last_printed - 1 - steps_per_second * 1.0, (last_stored, last_printed)
    df = reader.scalars(keys=["loss"])
    assert df["step"].tolist() == list(range(last_stored + 1))  # nothing missing before it
    # the writer's heartbeat stopped and the process is gone: crashed, not running
    while time.time() - t_kill < 3.0:
        time.sleep(0.2)
    assert reader.meta["status"] == "crashed"
    # close() never ran, so the step count comes from the store itself
    assert reader.meta["steps"] == last_stored + 1
