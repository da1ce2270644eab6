"""``avionics diagnose RUN`` re-runs the rules on a saved run and reproduces the live findings.

The live engine stored its findings while training; the replay reads the store back (no torch)
and must find exactly the same codes at the same steps and layers. The command exits 1 when a
finding is critical, 0 otherwise, 2 when the run cannot be read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from instrument.diagnosis.replay import diagnose
from tests.instrument.diagnosis.test_diag_negative import HEALTHY
from tests.instrument.diagnosis.test_diag_positive import SCENARIOS

pytestmark = pytest.mark.slow  # real runs replayed through the CLI: in make test, not in make test-fast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))


def live_findings(run) -> set:
    ev = run.events()
    ev = ev[ev["code"] != "instrument_error"]
    return {(r.code, int(r.step), r.layer if isinstance(r.layer, str) else None, r.severity)
            for r in ev.itertuples()}


def replayed(diag) -> set:
    return {(f.code, f.step, f.layer, f.severity) for f in diag.findings}


def cli(*args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "instrument.cli", "diagnose", *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)


@pytest.mark.parametrize("code", list(SCENARIOS))
def test_replay_reproduces_live_findings(trained, code):
    res, run = trained(*SCENARIOS[code])
    diag = diagnose(run)
    assert replayed(diag) == live_findings(run)
    assert code in {f.code for f in diag.findings}


def test_cli_exits_nonzero_on_critical_and_prints_the_findings(trained):
    res, run = trained(*SCENARIOS["missing_zero_grad"])
    out = cli(res["run_dir"])
    assert out.returncode == 1, out.stderr
    assert "CRITICAL" in out.stdout and "missing_zero_grad" in out.stdout
    assert "try: Call optimizer.zero_grad()" in out.stdout
    js = cli(res["run_dir"], "--json")
    assert js.returncode == 1
    data = json.loads(js.stdout)
    assert {(f["code"], f["step"], f["layer"], f["severity"]) for f in data["findings"]} == \
        live_findings(run)


def test_cli_exits_zero_on_warnings_and_on_healthy_runs(trained):
    res, run = trained(*SCENARIOS["dead_units"])
    out = cli(res["run_dir"])
    assert out.returncode == 0 and "dead_units" in out.stdout, out.stdout + out.stderr
    res, run = trained("mlp_sgd_momentum", HEALTHY["mlp_sgd_momentum"])
    out = cli(res["run_dir"])
    assert out.returncode == 0 and "No findings" in out.stdout, out.stdout + out.stderr


def test_cli_threshold_overrides_and_errors(trained, tmp_path):
    res, run = trained(*SCENARIOS["dead_units"])
    quiet = cli(res["run_dir"], "--set", "dead_min_batch=1000", "--set",
                "disabled_rules=activation_scale,frozen_parameters,vanishing_gradients")
    assert quiet.returncode == 0 and "dead_units" not in quiet.stdout.split("Rules that")[0]
    bad = cli(res["run_dir"], "--set", "dead_fractoin=0.7")
    assert bad.returncode == 2 and "dead_fraction" in bad.stderr  # did-you-mean hint
    missing = cli(str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no avionics run" in missing.stderr


def test_diagnose_imports_no_torch(trained):
    res, run = trained(*SCENARIOS["repeated_batch"])
    code = ("import sys; from instrument.cli import main; rc = main(['diagnose', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, res["run_dir"]], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert out.returncode == 0 and "repeated_batch" in out.stdout, out.stderr
