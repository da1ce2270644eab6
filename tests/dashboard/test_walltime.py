"""The wall-time x axis on real stores with irregular step times: every x drawn, the replay
cursors and live appends against a brute-force mapping read from the whole ``steps`` table."""

from __future__ import annotations

import os
import sqlite3

import numpy as np
import pytest

from dashboard import refresh, settings, walltime
from dashboard.panels import base, grad_norm, scalars
from dashboard.panels.base import View
from dashboard.runs import RunCatalog
from instrument.store import schema
from instrument.store.reader import load, store_path
from instrument.store.records import LayerValues, StepData
from instrument.store.writer import StoreWriter

Keys = schema.Keys
START = 1.7e9
EVERY = 3
"""Steps are logged every third step, so a step in between is placed by interpolation."""


def durations(seed: int, n: int) -> np.ndarray:
    """Irregular step times, with one long pause (an evaluation) in the middle."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.01, 0.2, n)
    d[n // 2] += 30.0
    return d


def step_data(step: int, wall: float) -> StepData:
    d = StepData(step, wall_time=wall, scalars={Keys.LOSS: 1.0 / (1 + step),
                                                Keys.GRAD_NORM_TOTAL: 1.0 + step % 5})
    d.layers[Keys.GRAD_NORM] = LayerValues(("a.weight", "b.weight"), [1.0 + step, 2.0])
    return d


def write(run_dir: str, steps: int, seed: int, *, close: bool = True, start: float = START,
          with_start: bool = True):
    os.makedirs(run_dir, exist_ok=True)
    meta = {"name": os.path.basename(run_dir)}
    if with_start:
        meta["start_time"] = start
    writer = StoreWriter(store_path(run_dir), meta, flush_interval=0.05)
    wall = start + 5.0 + np.cumsum(durations(seed, steps))  # 5 s of set-up before step 0
    for s in range(0, steps, EVERY):
        writer.submit(step_data(s, float(wall[s])))
    writer.flush()
    if close:
        writer.close(steps=steps)
    return writer


def brute(run_dir: str, query, start: float) -> np.ndarray:
    """Seconds since ``start`` of each queried step, by linear interpolation between the
    surrounding rows of the whole steps table (the first/last row's time outside it)."""
    with sqlite3.connect(store_path(run_dir)) as conn:
        rows = conn.execute("SELECT step, wall_time FROM steps ORDER BY step").fetchall()
    out = []
    for q in query:
        before = [r for r in rows if r[0] <= q]
        after = [r for r in rows if r[0] >= q]
        if not before:
            out.append(after[0][1])
        elif not after:
            out.append(before[-1][1])
        else:
            (s0, w0), (s1, w1) = before[-1], after[0]
            out.append(w0 if s1 == s0 else w0 + (w1 - w0) * (q - s0) / (s1 - s0))
    return np.asarray(out) - start


def test_bracketing_rows_give_the_whole_table_interpolation(tmp_path):
    write(str(tmp_path / "r"), 900, seed=1)
    run = load(str(tmp_path / "r"))
    rng = np.random.default_rng(0)
    query = sorted(set(rng.integers(-5, 910, 300).tolist()) | {0, 1, 2, 450, 451, 897, 2000})
    steps, walls = run.step_walls(query)
    assert len(steps) <= 2 * len(query) and np.all(np.diff(steps) > 0)
    clock = walltime.Clock(steps, walls, START)
    np.testing.assert_allclose(clock.seconds(query), brute(str(tmp_path / "r"), query, START),
                               rtol=0, atol=1e-6)
    assert [len(a) for a in run.step_walls([])] == [0, 0]


def _lines(fig, key):
    return {(t["meta"]["live"]["run"], t["meta"]["live"]["stat"]): t for t in fig["data"]
            if (t.get("meta") or {}).get("live", {}).get("key") == key}


def test_downsampled_lines_and_cursors_of_two_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_TRACE_POINTS", 200)  # 3,000 steps: buckets of 16
    monkeypatch.setattr(settings, "MAX_FIGURE_POINTS", 400)
    write(str(tmp_path / "a"), 9000, seed=1)
    write(str(tmp_path / "b"), 6000, seed=2, start=START + 100.0)
    cat = RunCatalog(str(tmp_path))
    view = View(["a", "b"], step=1001, options=(walltime.WALL,))
    items = base.load(scalars, cat, view)
    fig = scalars.figure(items, view)
    lines = _lines(fig, Keys.LOSS)
    for item, start in zip(items, (START, START + 100.0)):
        ds = item.series[Keys.LOSS]
        assert item.bucket(Keys.LOSS) > 1, "the test must cover downsampled buckets"
        want = brute(os.path.join(str(tmp_path), item.id), ds.step, start)
        for stat in ("mean", "min", "max"):
            np.testing.assert_allclose(lines[(item.id, stat)]["x"], want, atol=2e-3)
        assert "s<extra>" in lines[(item.id, "mean")]["hovertemplate"]
    cursors = [s for s in fig["layout"]["shapes"] if s["name"] == "cursor"]
    assert [c["line"]["color"] for c in cursors] == [items[0].colour, items[1].colour]
    assert [c["x0"] for c in cursors] == pytest.approx(
        [brute(str(tmp_path / r), [1001], s)[0] for r, s in (("a", START), ("b", START + 100))],
        abs=2e-3)
    assert fig["layout"]["xaxis"]["title"]["text"] == walltime.AXIS_TITLE
    # by step (the default), nothing moves
    plain = scalars.figure(base.load(scalars, cat, View(["a", "b"], step=1001)),
                           View(["a", "b"], step=1001))
    assert _lines(plain, Keys.LOSS)[("a", "mean")]["x"] == items[0].series[Keys.LOSS].step.tolist()


def _moved(patch) -> dict:
    return {tuple(op["location"]): op["params"]["value"]
            for op in patch.to_plotly_json()["operations"] if op["operation"] == "Assign"}


def test_step_move_and_live_append_land_on_wall_time(tmp_path):
    writer = write(str(tmp_path / "a"), 300, seed=3, close=False)
    write(str(tmp_path / "b"), 200, seed=4, start=START + 7.0)
    try:
        cat = RunCatalog(str(tmp_path))
        view = View(["a", "b"], options=(walltime.WALL,))
        heads = {r: cat.head(r) for r in view.runs}
        first = refresh.render(grad_norm, cat, view, heads)
        wall = first.state["wall"]
        assert sorted(wall["cursors"].values()) == ["a", "b"]
        moved = refresh.refresh(grad_norm, cat, {"view"}, View(["a", "b"], step=100,
                                                               options=(walltime.WALL,)),
                                heads, first.state)
        got = _moved(moved.figure)
        for j, run in wall["cursors"].items():
            start = START if run == "a" else START + 7.0
            assert got[("layout", "shapes", int(j), "x0")] == pytest.approx(
                brute(str(tmp_path / run), [100], start)[0], abs=2e-3)  # 100: interpolated
        # the live run grows: the appended points of its global norm are in seconds
        more = START + 5.0 + np.cumsum(durations(3, 400))
        for s in range(300, 400, EVERY):
            writer.submit(step_data(s, float(more[s])))
        writer.flush()
        heads = {r: cat.head(r, heads[r]) for r in view.runs}
        out = refresh.refresh(grad_norm, cat, {"heads"}, view, heads, first.state)
        i = next(i for i, t in enumerate(first.figure["data"])
                 if (t.get("meta") or {}).get("live", {}).get("run") == "a"
                 and t["meta"]["live"]["key"] == Keys.GRAD_NORM_TOTAL)
        ext = [x for op in out.figure.to_plotly_json()["operations"]
               if op["operation"] == "Extend" and op["location"] == ["data", i, "x"]
               for x in op["params"]["value"]]
        np.testing.assert_allclose(ext, brute(str(tmp_path / "a"), range(300, 400, EVERY),
                                              START), atol=2e-3)
    finally:
        writer.close()


def test_without_start_time_the_first_logged_step_is_zero(tmp_path):
    write(str(tmp_path / "r"), 60, seed=5, with_start=False)
    cat = RunCatalog(str(tmp_path))
    view = View(["r"], options=(walltime.WALL,))
    item, = base.load(grad_norm, cat, view)
    first_wall = brute(str(tmp_path / "r"), [0], 0.0)[0]  # wall time of step 0
    assert "start_time" not in item.meta and item.clock.t0 == pytest.approx(first_wall, abs=1e-6)
    x = _lines(grad_norm.figure([item], view), Keys.GRAD_NORM_TOTAL)[("r", "mean")]["x"]
    np.testing.assert_allclose(x, brute(str(tmp_path / "r"), range(0, 60, EVERY),
                                        item.clock.t0), atol=2e-3)
    assert x[0] == 0.0
