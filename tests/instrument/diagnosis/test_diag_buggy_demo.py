"""demos/buggy.py: each seeded bug is diagnosed, the healthy baseline is quiet."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import instrument
from instrument.diagnosis.replay import diagnose

pytestmark = pytest.mark.slow  # many real training runs: in make test, not in make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))
DEMO = os.path.join(ROOT, "demos", "buggy.py")

# flag -> (steps, expected code, exit status)
EXPECTED = {
    "": (200, None, 0),
    "no-zero-grad": (10, "missing_zero_grad", 1),
    "eval-mode": (55, "eval_mode_training", 0),
    "softmax-into-loss": (10, "probabilities_into_loss", 0),
    "unshuffled": (25, "single_label_batch", 0),
    "repeated-batch": (15, "repeated_batch", 0),
    "raw-pixels": (10, "input_scale", 0),
    "shuffled-labels": (105, "loss_at_chance", 0),
    "lr-high": (10, "lr_too_high", 0),
    "lr-low": (200, "lr_too_low", 0),  # cosine over the run: the window must fit early
    "short-cosine": (60, "lr_schedule_increasing", 0),
    "dead-relu": (45, "dead_units", 0),
    "new-head": (55, "frozen_parameters", 0),
    "log-features": (3, "nonfinite", 1),
}


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("buggy_demo", DEMO)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_bug_has_an_expectation(demo):
    assert set(EXPECTED) - {""} == set(demo.BUGS)


@pytest.mark.parametrize("flag", list(EXPECTED))
def test_demo_flag_is_diagnosed(demo, flag, tmp_path, capsys):
    steps, code, status = EXPECTED[flag]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rc = demo.main(([f"--{flag}"] if flag else []) +
                       ["--run", str(tmp_path / "r"), "--steps", str(steps)])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    codes = set(instrument.load(str(tmp_path / "r")).events()["code"])
    assert rc == status
    if code is None:
        assert codes == set() and "No findings" in out
    else:
        assert code in codes and code in out


def test_raw_pixels_symptoms_are_linked_to_their_cause(demo, tmp_path, capsys):
    """Unscaled inputs make the first loss huge and the first steps giant before input_scale
    has seen enough steps to speak: the report says those findings are probably its doing."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        demo.main(["--raw-pixels", "--run", str(tmp_path / "r"), "--steps", "10"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    run = instrument.load(str(tmp_path / "r"))
    diag = diagnose(run)
    [cause] = [f for f in diag.findings if f.code == "input_scale"]
    linked = [f for f in diag.findings if f.explained_by is not None]
    assert {f.code for f in linked} == {"initial_loss", "lr_too_high"}
    assert all(f.explained_by == ("input_scale", cause.step) and f.step < cause.step
               for f in linked)
    [stored] = run.events(codes=["input_scale"]).itertuples()  # the live event says it too
    assert sorted(stored.evidence["explains"]) == sorted(f"{f.code}@{f.step}" for f in linked)
    assert "fix it first" in stored.message
    assert out.count("probably caused by input_scale") == 2
    assert "2 probably caused by another finding" in out


@pytest.mark.slow
def test_demo_runs_as_a_script(tmp_path):
    out = subprocess.run([sys.executable, DEMO, "--softmax-into-loss", "--steps", "5",
                          "--run", str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "probabilities_into_loss" in out.stdout  # the report
    assert "avionics warning [probabilities_into_loss]" in out.stderr  # the live console line
