"""Ranks panel in the dashboard framework: per-rank live lines, the spread, window means as
stacked bars with the straggler named, the loss option, one run at a time, the placeholder."""

from __future__ import annotations

import numpy as np

from dashboard.panels import ranks
from dashboard.panels.base import View
from instrument.store import schema
from tests.dashboard.panel_inputs import decode, run_input, series, traces

Keys = schema.Keys
RANKS = ["0", "1", "2"]


def _run(run_id="r", level=0):
    steps = np.arange(0, 40, 4 ** level) + (4 ** level - 1)
    n = len(steps)
    compute = np.tile([0.010, 0.010, 0.011], (n, 1))
    between = np.tile([0.002, 0.030, 0.002], (n, 1))  # rank 1 loads data slowly
    step = compute + between
    return run_input(run_id, series_list=[
        series(Keys.RANK_STEP_TIME, steps, step, layers=RANKS, level=level),
        series(Keys.RANK_COMPUTE_TIME, steps, compute, layers=RANKS, level=level),
        series(Keys.RANK_BETWEEN_TIME, steps, between, layers=RANKS, level=level),
        series(Keys.RANK_LOSS, steps, np.tile([1.0, 2.0, 3.0], (n, 1)), layers=RANKS,
               level=level),
        series(Keys.RANK_STEP_TIME_SPREAD, steps, step.max(1) - step.min(1), level=level)])


def test_lines_per_rank_spread_and_the_straggler():
    fig = ranks.figure([_run()], View(["r"], step=8))
    lines = traces(fig, key=Keys.RANK_STEP_TIME, stat="mean")
    assert [t["meta"]["live"]["layer"] for t in lines] == RANKS
    np.testing.assert_allclose(decode(lines[1]["y"]), 0.040, rtol=1e-6)
    spread, = traces(fig, key=Keys.RANK_STEP_TIME_SPREAD, stat="mean")
    np.testing.assert_allclose(decode(spread["y"]), 0.040 - 0.012, rtol=1e-6)
    compute, between = traces(fig, type="bar")
    np.testing.assert_allclose(compute["y"], [10, 10, 11], rtol=1e-6)
    np.testing.assert_allclose(between["y"], [2, 30, 2], rtol=1e-6)
    assert between["marker"]["color"][1] == ranks.STRAGGLER_COLOUR
    assert between["marker"]["color"][0] != ranks.STRAGGLER_COLOUR
    assert any("rank 1 slow in between steps" in a["text"] for a in fig["layout"]["annotations"])
    assert not traces(fig, key=Keys.RANK_LOSS)


def test_downsampled_rows_and_the_loss_option():
    fig = ranks.figure([_run(level=1)], View(["r"], options=(ranks.LOSS_OPTION,)))
    _, between = traces(fig, type="bar")
    np.testing.assert_allclose(between["y"], [2, 30, 2], rtol=1e-6)
    losses = traces(fig, key=Keys.RANK_LOSS, stat="mean")
    assert [float(decode(t["y"])[0]) for t in losses] == [1.0, 2.0, 3.0]
    need_keys = [n.key for n in ranks.needs({}, (ranks.LOSS_OPTION,))]
    assert Keys.RANK_LOSS in need_keys and Keys.RANK_LOSS not in [
        n.key for n in ranks.needs({}, ())]


def test_one_run_at_a_time_and_the_placeholder():
    fig = ranks.figure([run_input("single"), _run("a"), _run("b")], View(["single", "a", "b"]))
    assert {t["meta"]["live"]["run"] for t in traces(fig, stat="mean")} == {"a"}
    empty = ranks.figure([run_input("single")], View(["single"]))
    assert empty["layout"]["meta"]["placeholder"] == ranks.MISSING
