"""The training process imports neither pandas nor dash: a training script pays for what
it writes, not for the reader, the diagnosis report or the dashboard (they import those lazily)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # fresh interpreters: in make test, not in make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import json, sys
import torch
from torch import nn
import instrument
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
opt = torch.optim.AdamW(model.parameters())
with instrument.watch(model, opt, run=sys.argv[1], strict=True, schedules={"*": 1}) as mon:
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(torch.randn(5, 4)), torch.randint(0, 2, (5,)))
        loss.backward()
        opt.step()
        mon.log(loss=loss)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("pandas", "dash"))))
"""


def test_training_process_imports_no_pandas_or_dash(run_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", SCRIPT, run_dir], capture_output=True,
                         text=True, env=env, check=True, timeout=300)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    # and the run it wrote reads back (the reader imports pandas when asked for frames)
    import instrument

    assert instrument.load(run_dir).meta["steps"] == 3
