"""The "healthy runs stay quiet" check shared by the framework tests."""

from __future__ import annotations

import pytest

import instrument
from instrument.diagnosis.replay import diagnose
from instrument.store import schema


def loud_findings(run_dir: str) -> list:
    """Warnings and criticals of ``avionics diagnose`` on the run."""
    diag = diagnose(instrument.load(run_dir))
    return [f for f in diag.findings if f.severity in (schema.WARNING, schema.CRITICAL)]


def assert_quiet(request, run_dir: str, known_false_alarms: dict | None = None) -> None:
    """No warning or critical finding. ``known_false_alarms`` maps a rule code to why it fires
    on this healthy run: if only such rules fire, the test is marked xfail (strict=False)
    naming them, so it passes again by itself once the rule is fixed. Nothing here changes a
    rule."""
    known_false_alarms = known_false_alarms or {}
    loud = loud_findings(run_dir)
    described = [f"{f.code} ({f.severity}) step {f.step} {f.layer}: {f.message}" for f in loud]
    codes = {f.code for f in loud}
    if codes and codes <= set(known_false_alarms):
        request.applymarker(pytest.mark.xfail(
            reason="known false alarm of rule(s) " + ", ".join(
                f"{c} ({known_false_alarms[c]})" for c in sorted(codes)), strict=False))
    assert not loud, described
