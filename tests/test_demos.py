"""The demos run end to end (briefly) and leave a readable, finished run."""

import os
import subprocess
import sys

import pytest

import instrument

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_digits_demo(tmp_path):
    run = str(tmp_path / "digits")
    out = subprocess.run([sys.executable, os.path.join(ROOT, "demos", "train_digits.py"),
                          "--run", run, "--steps", "40"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert "recording into" in out
    r = instrument.load(run)
    assert r.meta["status"] == "finished" and r.last_step() == 39
    loss = r.scalars(keys=["loss"])["value"]
    assert loss.iloc[-5:].mean() < loss.iloc[:5].mean()  # it learns
