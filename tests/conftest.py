"""Shared fixtures: tiny real models and a real training loop, run with and without avionics."""

from __future__ import annotations

import os
import sys
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def run_dir(tmp_path):
    """A fresh run directory path (not yet created)."""
    return str(tmp_path / "run")


def _writer_threads() -> set:
    return {t for t in threading.enumerate() if t.name == "avionics-writer" and t.is_alive()}


@pytest.fixture(autouse=True)
def no_leaked_store_writer():
    """A test closes every monitor and store writer it opens. A writer left open keeps its thread
    (and its worker process) for the rest of the session; a failed one that once spun slowed
    every later test past its timeout."""
    before = _writer_threads()
    yield
    leaked = _writer_threads() - before
    assert not leaked, f"{len(leaked)} store writer(s) left open: close the monitor or writer"
