"""The store: writer thread, reader frames, downsampled series, errors with clear messages."""

import os
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from instrument.store import schema
from instrument.store.errors import (
    RunNotFoundError,
    SchemaVersionError,
    StoreCorruptError,
    StoreLockedError,
)
from instrument.store.reader import load, store_path
from instrument.store.records import Event, LayerValues, StepData
from instrument.store.writer import StoreWriter


def make_store(run_dir, steps=100, layers=("a", "b", "c"), flush=0.05, **kw):
    os.makedirs(run_dir, exist_ok=True)
    w = StoreWriter(store_path(run_dir), {"name": "t", **kw}, flush_interval=flush, strict=True)
    for s in range(steps):
        w.submit(StepData(s, wall_time=1000.0 + s, scalars={"loss": 1.0 / (s + 1)},
                          layers={"g": LayerValues(list(layers), np.arange(len(layers)) + s)}))
    return w


def test_roundtrip_frames(run_dir):
    w = make_store(run_dir, steps=10)
    w.submit(Event("nonfinite", "critical", "boom", step=3, layer="b", evidence={"x": 1},
                   suggestion="try"))
    w.close()
    run = load(run_dir)
    sc = run.scalars()
    assert list(sc.columns) == ["step", "wall_time", "key", "value"]
    assert sc["step"].tolist() == list(range(10))
    np.testing.assert_allclose(sc["value"], [1.0 / (s + 1) for s in range(10)])
    np.testing.assert_allclose(sc["wall_time"], [1000.0 + s for s in range(10)])
    ly = run.layers()
    assert list(ly.columns) == ["step", "layer", "key", "value"]
    assert len(ly) == 30
    row = ly[(ly.step == 7) & (ly.layer == "c")]
    assert row["value"].item() == 9.0
    ev = run.events()
    assert ev.loc[0, "code"] == "nonfinite" and ev.loc[0, "evidence"] == {"x": 1}
    assert ev.loc[0, "step"] == 3 and ev.loc[0, "suggestion"] == "try"
    meta = run.meta
    assert meta["status"] == schema.FINISHED and meta["name"] == "t"
    assert run.step_range() == (0, 9)
    assert run.keys(schema.LAYER) == ["g"] and run.layer_names("g") == ["a", "b", "c"]


def test_filters_and_at_step(run_dir):
    w = make_store(run_dir, steps=20)
    w.close()
    run = load(run_dir)
    assert run.scalars(start=5, stop=7)["step"].tolist() == [5, 6, 7]
    ly = run.layers(layers=["b"], start=3, stop=4)
    assert ly["value"].tolist() == [4.0, 5.0]
    step, names, values = run.at_step("g", 100)
    assert step == 19 and names == ["a", "b", "c"] and values.tolist() == [19, 20, 21]
    steps, vals = run.points_after("loss", after_step=17)
    assert steps.tolist() == [18, 19]


def test_layers_that_appear_later_are_kept(run_dir):
    os.makedirs(run_dir)
    w = StoreWriter(store_path(run_dir), {}, flush_interval=0.01, strict=True)
    w.submit(StepData(0, layers={"g": LayerValues(["a"], [1.0])}))
    w.flush()
    w.submit(StepData(1, layers={"g": LayerValues(["b", "a"], [5.0, 2.0])}))
    w.close()
    run = load(run_dir)
    assert run.layer_names("g") == ["a", "b"]
    ly = run.layers()
    got = {(s, l): v for s, l, v in zip(ly.step, ly.layer, ly.value)}
    assert got[(0, "a")] == 1.0 and np.isnan(got[(0, "b")])
    assert got[(1, "a")] == 2.0 and got[(1, "b")] == 5.0


def test_downsampled_series_are_bounded_and_exact(run_dir):
    w = make_store(run_dir, steps=5000, flush=0.2)
    w.close()
    run = load(run_dir)
    ds = run.series("loss", max_points=300)
    assert 0 < len(ds.step) <= 300 and ds.level > 0
    # every bucket's mean/min/max equals brute force over the raw values it covers
    raw = 1.0 / (np.arange(5000) + 1)
    for first, last, mean, mn, mx in zip(ds.first_step, ds.step, ds.mean, ds.min, ds.max):
        chunk = raw[first:last + 1]
        assert mean == pytest.approx(chunk.mean(), rel=1e-9)
        assert mn == pytest.approx(chunk.min()) and mx == pytest.approx(chunk.max())
    assert ds.count.sum() == 5000
    full = run.series("loss", max_points=10000)
    assert full.level == 0 and len(full.step) == 5000
    lay = run.series("g", schema.LAYER, start=1000, stop=1999, max_points=100, layers=["c"])
    assert lay.mean.shape[1] == 1 and lay.layers == ["c"]
    assert lay.step.min() >= 1000 - 4**lay.level and lay.step.max() <= 1999 + 4**lay.level


def test_sparse_series_use_the_finest_level_that_fits(run_dir):
    os.makedirs(run_dir)
    w = StoreWriter(store_path(run_dir), {}, flush_interval=0.05, strict=True)
    for s in range(0, 100000, 1000):  # 100 points spread over 1e5 steps
        w.submit(StepData(s, scalars={"x": float(s)}))
    w.close()
    ds = load(run_dir).series("x", max_points=500)
    assert ds.level == 0 and len(ds.step) == 100


def test_heartbeat_and_running_status(run_dir):
    w = make_store(run_dir, steps=3)
    w.flush()
    assert load(run_dir).meta["status"] == schema.RUNNING
    w.close()
    assert load(run_dir).meta["status"] == schema.FINISHED


def test_stale_heartbeat_reads_as_crashed(run_dir):
    w = make_store(run_dir, steps=3)
    w.close()
    conn = sqlite3.connect(store_path(run_dir))
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'status'", ('"running"',))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'heartbeat'",
                     (str(time.time() - schema.HEARTBEAT_STALE_S - 1),))
    conn.close()
    assert load(run_dir).meta["status"] == schema.CRASHED


def test_missing_store(tmp_path):
    with pytest.raises(RunNotFoundError, match="no avionics run"):
        load(str(tmp_path / "nope"))
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(RunNotFoundError, match="is a file"):
        load(str(f))


def test_empty_truncated_foreign_and_corrupt_stores(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    (d / schema.STORE_FILE).write_bytes(b"")
    with pytest.raises(StoreCorruptError, match="empty"):
        load(str(d))
    d = tmp_path / "garbage"
    d.mkdir()
    (d / schema.STORE_FILE).write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreCorruptError, match="not an SQLite"):
        load(str(d))
    d = tmp_path / "foreign"
    d.mkdir()
    c = sqlite3.connect(d / schema.STORE_FILE)
    c.execute("CREATE TABLE x (a)")
    c.commit()
    c.close()
    with pytest.raises(StoreCorruptError, match="no schema table"):
        load(str(d))
    good = str(tmp_path / "good")
    w = make_store(good, steps=3000)
    w.close()
    data = open(store_path(good), "rb").read()
    d = tmp_path / "truncated"
    d.mkdir()
    (d / schema.STORE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(StoreCorruptError):
        run = load(str(d))
        run.layers()


def test_newer_schema_is_refused(run_dir):
    w = make_store(run_dir, steps=2)
    w.close()
    c = sqlite3.connect(store_path(run_dir))
    with c:
        c.execute("UPDATE schema SET version = ?", (schema.SCHEMA_VERSION + 1,))
    c.close()
    with pytest.raises(SchemaVersionError, match="Upgrade avionics"):
        load(run_dir)


def test_older_schema_is_refused_not_misread(run_dir):
    w = make_store(run_dir, steps=2)
    w.close()
    c = sqlite3.connect(store_path(run_dir))
    with c:
        c.execute("UPDATE schema SET version = ?", (schema.OLDEST_READABLE_VERSION - 1,))
    c.close()
    with pytest.raises(SchemaVersionError, match="pre-release layout"):
        load(run_dir)


def test_locked_store(run_dir, monkeypatch):
    w = make_store(run_dir, steps=2)
    w.close()
    c = sqlite3.connect(store_path(run_dir))
    c.execute("PRAGMA journal_mode=DELETE")  # rollback journal: an exclusive lock blocks readers
    c.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr("instrument.store.reader.READ_BUSY_TIMEOUT_MS", 50)
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            load(run_dir).scalars()
    finally:
        c.rollback()
        c.close()


@pytest.mark.slow
def test_reader_in_another_process_while_writing(run_dir):
    """A second process reads consistent, growing data while the writer thread writes."""
    w = make_store(run_dir, steps=1)
    code = (
        f"import sys, time; sys.path.insert(0, {os.getcwd()!r})\n"
        "from instrument.store.reader import load\n"
        "seen = []\n"
        "for _ in range(40):\n"
        f"    r = load({run_dir!r}); sc = r.scalars(); ly = r.layers()\n"
        "    assert len(ly) % 3 == 0 and len(ly) // 3 >= len(sc), (len(ly), len(sc))\n"
        "    assert sc['step'].tolist() == list(range(len(sc)))\n"
        "    seen.append(len(sc)); time.sleep(0.05)\n"
        "assert seen == sorted(seen) and seen[-1] > seen[0], seen\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok', seen[0], seen[-1])\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    s = 1
    while proc.poll() is None:
        w.submit(StepData(s, scalars={"loss": float(s)},
                          layers={"g": LayerValues(["a", "b", "c"], [s, s, s])}))
        s += 1
        time.sleep(0.002)
    w.close()
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert out.startswith("ok")


def test_disk_full_disables_recording_with_one_warning(run_dir, monkeypatch, caplog):
    """A real SQLite "disk is full" error: recording stops, nothing raises, one warning.
    (The worker runs on the writer thread here, so that the test can shrink its database.)"""
    import instrument.store.worker as writer_mod

    real_connect = sqlite3.connect

    def small_disk(*args, **kw):
        conn = real_connect(*args, **kw)
        conn.execute("PRAGMA max_page_count = 40")
        return conn

    monkeypatch.setattr(writer_mod.sqlite3, "connect", small_disk)
    os.makedirs(run_dir)
    w = StoreWriter(store_path(run_dir), {}, flush_interval=0.01, strict=False, mode="thread")
    names = [f"l{i}" for i in range(200)]
    with caplog.at_level("WARNING", logger="avionics"):
        for s in range(500):
            w.submit(StepData(s, layers={"g": LayerValues(names, np.full(200, s))}))
        w.flush()
        assert not w.alive
        w.submit(StepData(999, scalars={"x": 1.0}))  # dropped quietly, never raises
        w.close()
    msgs = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(msgs) == 1 and "full" in msgs[0]


def test_disk_error_is_raised_on_the_training_thread_under_strict(run_dir, monkeypatch):
    import instrument.store.worker as writer_mod

    real_connect = sqlite3.connect

    def small_disk(*args, **kw):
        conn = real_connect(*args, **kw)
        conn.execute("PRAGMA max_page_count = 40")
        return conn

    monkeypatch.setattr(writer_mod.sqlite3, "connect", small_disk)
    os.makedirs(run_dir)
    w = StoreWriter(store_path(run_dir), {}, flush_interval=0.01, strict=True, mode="thread")
    names = [f"l{i}" for i in range(200)]
    try:
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for s in range(500):
                w.submit(StepData(s, layers={"g": LayerValues(names, np.full(200, s))}))
            w.flush()
    finally:
        w.close()


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_failed_writer_sleeps_until_closed(run_dir, mode):
    """After a write error the writer thread has nothing to do until close(): it must not spin
    (a spinning thread takes a core and, through the GIL, slows the training thread)."""
    os.makedirs(run_dir)
    w = StoreWriter(store_path(run_dir), {}, flush_interval=0.05, strict=False, mode=mode)
    try:
        w.submit(StepData(0, scalars={"loss": 1.0}))
        w.flush()
        w._fail(OSError("disk gone"))  # what any failing sink reports
        first = w.wakeups
        time.sleep(1.0)
        # one round per flush interval and heartbeat at most (about 21 in 1 s); a spinning
        # loop makes thousands, however loaded the machine
        assert w.wakeups - first < 100, f"{w.wakeups - first} rounds in 1 s: the thread spins"
        assert not w.alive
    finally:
        w.close()


def test_worker_process_death_stops_recording_with_one_warning(run_dir, caplog):
    w = make_store(run_dir, steps=5)
    w.strict = False  # the policy under test: warn once and go on
    assert w.mode == "process"
    w.flush()
    w._sink.proc.kill()
    w._sink.proc.wait()
    with caplog.at_level("WARNING", logger="avionics"):
        for s in range(5, 50):
            w.submit(StepData(s, scalars={"loss": 1.0}))
            time.sleep(0.005)
        w.flush(timeout=10)
        w.close()
    assert not w.alive
    msgs = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert len(msgs) == 1 and "exited" in msgs[0]
    assert load(run_dir).last_step() == 4  # everything before the worker died is there


def test_both_modes_write_the_same_store(tmp_path):
    frames = []
    for mode in ("process", "thread"):
        d = str(tmp_path / mode)
        os.makedirs(d)
        w = StoreWriter(store_path(d), {"name": "t"}, flush_interval=0.01, strict=True,
                        mode=mode)
        assert w.mode == mode
        for s in range(300):
            w.submit(StepData(s, wall_time=float(s), scalars={"loss": 1.0 / (s + 1)},
                              layers={"g": LayerValues(["a", "b"], [s, -s])}))
        w.close()
        r = load(d)
        frames.append((r.scalars(), r.layers(), r.series("g", schema.LAYER, max_points=30)))
    (s1, l1, d1), (s2, l2, d2) = frames
    assert s1.equals(s2) and l1.equals(l2)
    np.testing.assert_array_equal(d1.mean, d2.mean)


def test_reader_does_not_import_torch():
    code = (f"import sys; sys.path.insert(0, {os.getcwd()!r})\n"
            "import instrument, instrument.store\n"
            "from instrument.store import load\n"
            "assert 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


class _LoggingObserver:
    """An observer that logs on every step (as the diagnosis engine does when a rule fires)."""

    def __call__(self, step_data):
        import logging
        logging.getLogger("avionics.test").warning("observed step %d", step_data.step)
        return []


def test_log_lines_of_the_worker_process_reach_the_training_process(run_dir, caplog):
    os.makedirs(run_dir, exist_ok=True)
    with caplog.at_level("WARNING", logger="avionics"):
        w = StoreWriter(store_path(run_dir), {"name": "t"}, flush_interval=0.01, strict=True,
                        observers=[_LoggingObserver()], mode="process")
        assert w.mode == "process"
        for s in range(3):
            w.submit(StepData(s, scalars={"loss": 1.0}))
        w.flush(timeout=20)
        w.close()
    got = [r.getMessage() for r in caplog.records if r.name == "avionics.test"]
    assert got == [f"observed step {s}" for s in range(3)]
    assert load(run_dir).last_step() == 2
