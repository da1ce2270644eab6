"""The ranks panel's pure figure functions: per-rank means, spread and stragglers against brute
force, the figure's traces, and no torch import."""

import json
import os
import subprocess
import sys

import numpy as np

from dashboard.panels import ranks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def times():
    """4 steps x 3 ranks: rank 2 spends 30 ms more between steps; one missing value."""
    compute = np.array([[0.010, 0.011, 0.010], [0.012, 0.010, 0.011], [0.011, 0.012, 0.010],
                        [0.010, 0.010, np.nan]])
    between = np.array([[0.002, 0.002, 0.032], [0.003, 0.002, 0.031], [0.002, 0.003, 0.033],
                        [0.002, 0.002, 0.030]])
    return compute + between, compute


def test_rank_stats_and_spread_against_brute_force():
    step, compute = times()
    stats = ranks.rank_stats(step, compute)
    for r in range(3):
        ok = ~np.isnan(step[:, r])
        assert np.isclose(stats["step"][r], step[ok, r].sum() / ok.sum())
        okc = ~np.isnan(compute[:, r])
        assert np.isclose(stats["compute"][r], compute[okc, r].sum() / okc.sum())
        gap = [s - c for s, c in zip(step[:, r], compute[:, r]) if not np.isnan(s - c)]
        assert np.isclose(stats["between"][r], sum(gap) / len(gap))
    for i in range(4):
        row = [v for v in step[i] if not np.isnan(v)]
        assert np.isclose(ranks.spread(step)[i], max(row) - min(row))


def test_weighted_means_of_downsampled_rows():
    """A row that stands for 4 steps weighs 4 times a raw row."""
    values = np.array([[1.0, np.nan], [3.0, 2.0]])
    stats = ranks.rank_stats(values, weights=np.array([1, 4]))
    assert np.allclose(stats["step"], [(1 * 1 + 3 * 4) / 5, 2.0])


def test_stragglers_need_both_ratio_and_absolute_excess():
    assert ranks.stragglers(np.array([0.010, 0.010, 0.010, 0.020])) == [3]
    assert ranks.stragglers(np.array([1e-4, 1e-4, 5e-4])) == []  # 5x but only 0.4 ms
    assert ranks.stragglers(np.array([0.010, np.nan])) == []  # one rank: nothing to compare
    assert ranks.stragglers(np.array([0.010, 0.0105, 0.0101])) == []


def test_figure_draws_every_rank_the_spread_and_names_the_straggler():
    step, compute = times()
    loss = np.array([[1.0, 1.1, 0.9]] * 4)
    fig = ranks.rank_figure([0, 1, 2, 3], ["0", "1", "2"], step, compute, loss=loss, step=2)
    json.dumps(fig, allow_nan=False)  # plain JSON: NaN went to None
    traces = fig["data"]
    band = traces[0]
    assert band["fill"] == "toself"
    hi = [max(v for v in row if not np.isnan(v)) * 1e3 for row in step]
    lo = [min(v for v in row if not np.isnan(v)) * 1e3 for row in step]
    assert np.allclose(band["y"], hi + lo[::-1])
    lines = [t for t in traces if t["type"] == "scatter" and t.get("yaxis") == "y" and t is not band]
    assert [t["name"] for t in lines] == ["rank 0", "rank 1", "rank 2"]
    assert lines[2]["y"][3] is None and lines[2]["y"][0] == step[0, 2] * 1e3  # NaN: a gap
    bars = [t for t in traces if t["type"] == "bar"]
    assert [b["name"] for b in bars] == ["compute", "between steps"]
    assert bars[1]["marker"]["color"][2] == ranks.STRAGGLER_COLOUR
    assert fig["meta"]["stragglers"] == [2]
    assert any("rank 2 slow in between steps" in a["text"] for a in fig["layout"]["annotations"])
    assert len([t for t in traces if t.get("yaxis") == "y3"]) == 3
    assert fig["layout"]["shapes"][0]["x0"] == 2


def test_many_ranks_draw_the_median_and_no_data_says_why():
    step = np.full((5, 40), 0.01)
    fig = ranks.rank_figure(range(5), [str(r) for r in range(40)], step)
    names = [t["name"] for t in fig["data"]]
    assert "median rank" in names and "rank 0" not in names
    empty = ranks.rank_figure([], [], np.zeros((0, 0)))
    assert empty["meta"]["placeholder"] == ranks.MISSING


def test_the_panel_imports_no_torch():
    code = "import sys, dashboard.panels.ranks; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
