"""The "healthy runs stay quiet" check shared by the framework tests."""

from __future__ import annotations

import instrument
from instrument.diagnosis.replay import diagnose
from instrument.store import schema


def loud_findings(run_dir: str) -> list:
    """Warnings and criticals of ``avionics diagnose`` on the run."""
    diag = diagnose(instrument.load(run_dir))
    return [f for f in diag.findings if f.severity in (schema.WARNING, schema.CRITICAL)]


def assert_quiet(run_dir: str) -> None:
    """No warning or critical finding from ``avionics diagnose`` on a healthy run."""
    loud = loud_findings(run_dir)
    described = [f"{f.code} ({f.severity}) step {f.step} {f.layer}: {f.message}" for f in loud]
    assert not loud, described
