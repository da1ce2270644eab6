"""The run catalog: discovery under a log directory, and no path can escape it."""

from __future__ import annotations

import os
import time

import pytest

from dashboard.runs import RunCatalog, UnknownRunError
from instrument.store.errors import StoreError
from tests.dashboard.stores import write_run

pytestmark = pytest.mark.slow  # catalogues of hundreds of runs: in make test, not in make test-fast


@pytest.fixture
def logdir(tmp_path):
    root = tmp_path / "logs"
    write_run(str(root / "a"), steps=3)
    write_run(str(root / "sweep" / "lr-0.1"), steps=3)
    write_run(str(root / ".hidden" / "x"), steps=3)
    write_run(str(tmp_path / "outside"), steps=3)  # a run next to, not under, the log dir
    (root / "not-a-run").mkdir()
    return root


def test_lists_runs_relative_to_the_logdir(logdir):
    assert RunCatalog(str(logdir)).names() == ["a", "sweep/lr-0.1"]


def test_a_run_directory_itself_is_served_as_dot(logdir):
    cat = RunCatalog(str(logdir / "a"))
    assert cat.names() == ["."]
    assert cat.display_name(".") == "a"
    assert cat.open(".").step_range() == (0, 2)


def test_depth_limit(tmp_path):
    deep = tmp_path / "l" / "1" / "2" / "3" / "4" / "5"
    write_run(str(deep), steps=1)
    assert RunCatalog(str(tmp_path / "l"), max_depth=3).names() == []
    assert RunCatalog(str(tmp_path / "l"), max_depth=6).names() == ["1/2/3/4/5"]


@pytest.mark.parametrize("name", ["../outside", "../../etc/passwd", "/etc/passwd", "a/../..",
                                  "sweep/../../outside", "./a/../../outside", "a\x00", "",
                                  "not-a-run", ".hidden/x", None, 3, ["a"], "A"])
def test_names_outside_the_catalog_are_refused(logdir, name):
    cat = RunCatalog(str(logdir))
    with pytest.raises(UnknownRunError, match="no run named"):
        cat.path(name)
    run, message = cat.try_open(name)
    assert run is None and "no run named" in message


def test_a_symlink_leading_outside_is_refused(logdir, tmp_path):
    os.symlink(tmp_path / "outside", logdir / "link")
    cat = RunCatalog(str(logdir))
    # os.walk does not follow the link, so the run behind it is not even listed
    assert "link" not in cat.names()
    with pytest.raises(UnknownRunError):
        cat.path("link")


def test_new_runs_appear_after_the_ttl(logdir):
    cat = RunCatalog(str(logdir), ttl=0.2)
    assert "b" not in cat.names()
    write_run(str(logdir / "b"), steps=2)
    time.sleep(0.3)
    assert "b" in cat.names()
    write_run(str(logdir / "c"), steps=2)
    assert cat.path("c")  # a name not yet listed triggers one re-scan before refusing


def test_latest_is_the_most_recently_written(logdir):
    cat = RunCatalog(str(logdir))
    time.sleep(0.05)
    write_run(str(logdir / "a"), steps=2, start=10)  # appends to a -> newest
    cat._scanned = -1e9
    assert cat.latest() == "a"


def test_head_reports_steps_events_and_errors(logdir):
    cat = RunCatalog(str(logdir))
    head = cat.head("a")
    assert head == {"first": 0, "last": 2, "series": head["series"], "events": 0,
                    "status": "finished"}
    assert head["series"] > 5
    assert "error" in cat.head("../outside")


def test_replaced_store_is_checked_again(logdir):
    cat = RunCatalog(str(logdir))
    assert cat.open("a").step_range() == (0, 2)
    store = logdir / "a" / "avionics.db"
    for suffix in ("", "-wal", "-shm"):
        p = str(store) + suffix
        if os.path.exists(p):
            os.remove(p)
    store.write_bytes(b"not a database at all, just text" * 10)
    with pytest.raises(StoreError, match="not an SQLite database"):
        cat.open("a")
