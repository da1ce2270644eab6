"""The reader additions the dashboard relies on: integrity=False, quick_check results, and
step ranges read without scanning every row."""

from __future__ import annotations

import os
import shutil

import pytest

from instrument.store.errors import StoreCorruptError
from instrument.store.reader import Run, load, store_path
from tests.dashboard.stores import write_run


def _damage_page(path: str) -> None:
    """Overwrite the start of a page in the middle of the file (not the header)."""
    size = os.path.getsize(path)
    page = 4096
    with open(path, "r+b") as fh:
        fh.seek((size // 2) // page * page)
        fh.write(b"\xff" * 200)


def test_quick_check_findings_raise(tmp_path):
    run_dir = str(tmp_path / "r")
    write_run(run_dir, steps=300)
    _damage_page(store_path(run_dir))
    with pytest.raises(StoreCorruptError, match="integrity check"):
        load(run_dir)
    # without the whole-file scan the store opens; the damage is met by reads instead
    run = load(run_dir, integrity=False)
    assert run.meta["name"] == "r"


def test_step_range_and_series_bounds(tmp_path):
    run_dir = str(tmp_path / "r")
    write_run(run_dir, steps=25, start=7)
    run = Run(run_dir)
    assert run.step_range() == (7, 31)
    ds = run.series("loss")  # start/stop default to the series' own range
    assert ds.step[0] == 7 and ds.step[-1] == 31 and len(ds.step) == 25
    empty = str(tmp_path / "empty")
    write_run(empty, steps=0)
    assert Run(empty).step_range() == (None, None)
    assert Run(empty).series("loss") is None


def test_healthy_store_passes_integrity(tmp_path):
    run_dir = str(tmp_path / "r")
    write_run(run_dir, steps=10)
    copy = str(tmp_path / "copy")
    shutil.copytree(run_dir, copy)
    assert load(copy).step_range() == (0, 9)
