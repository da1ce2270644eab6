"""The ``avionics`` command line."""

import os
import subprocess
import sys

import torch

import instrument
from tests.helpers import mlp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def avionics(*args):
    return subprocess.run([sys.executable, "-m", "instrument.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_runs_lists_runs_with_status(tmp_path):
    for name in ("a", "nested/b"):
        model = mlp()
        with instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                              run=str(tmp_path / name)) as mon:
            mon.log(x=1.0)
    (tmp_path / "nested" / "junk").mkdir()
    res = avionics("runs", str(tmp_path))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("a ") and "finished" in lines[0]
    assert lines[1].startswith(os.path.join("nested", "b"))


def test_bad_arguments():
    res = avionics("runs", "/definitely/not/here")
    assert res.returncode == 2 and "not a directory" in res.stdout
    res = avionics("frobnicate")
    assert res.returncode != 0 and "invalid choice" in res.stderr
