"""Shared fixtures: tiny real models and a real training loop, run with and without avionics."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture
def run_dir(tmp_path):
    """A fresh run directory path (not yet created)."""
    return str(tmp_path / "run")
