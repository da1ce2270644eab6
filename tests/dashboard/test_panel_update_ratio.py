"""Update/weight ratio panel: per-layer lines, the 1e-3 reference band, bars at the step."""

from __future__ import annotations

import numpy as np

from dashboard import settings
from dashboard.panels import update_ratio
from dashboard.panels.base import View
from instrument.store import schema
from tests.dashboard.panel_inputs import decode, run_input, series, traces

Keys = schema.Keys
LAYERS = ["a.weight", "b.weight"]


def _run(run_id="r", n_layers=2):
    layers = LAYERS if n_layers == 2 else [f"l{i}" for i in range(n_layers)]
    steps = np.arange(20)
    mat = 1e-3 * np.outer(1 + steps / 10, np.arange(1, n_layers + 1))
    return run_input(run_id, series_list=[
        series(Keys.UPDATE_RATIO, steps, mat, layers=layers),
        series(Keys.UPDATE_RATIO_TOTAL, steps, mat.mean(axis=1))],
        bars={Keys.UPDATE_RATIO: (19, layers, mat[19])})


def test_lines_per_layer_with_reference_band():
    fig = update_ratio.figure([_run()], View(["r"], step=4))
    per_layer = traces(fig, key=Keys.UPDATE_RATIO, stat="mean")
    assert [t["meta"]["live"]["layer"] for t in per_layer] == LAYERS
    np.testing.assert_allclose(decode(per_layer[1]["y"]), 2e-3 * (1 + np.arange(20) / 10),
                               rtol=1e-5)
    total, = traces(fig, key=Keys.UPDATE_RATIO_TOTAL, stat="mean")
    assert total["name"] == "whole model"
    assert fig["layout"]["yaxis"]["type"] == "log"
    bands = [s for s in fig["layout"]["shapes"] if s["name"] == "band"]
    lo, hi = settings.UPDATE_RATIO_BAND
    assert {(b["y0"], b["y1"]) for b in bands if b["yref"] == "y"} == {(lo, hi)}
    assert any(b.get("x0") == lo and b.get("x1") == hi for b in bands)  # on the bars too
    ref, = [s for s in fig["layout"]["shapes"] if s["name"] == "reference"]
    assert ref["y0"] == settings.UPDATE_RATIO_REFERENCE
    bar, = traces(fig, type="bar")
    np.testing.assert_allclose(bar["x"], 1e-3 * 2.9 * np.array([1, 2]), rtol=1e-5)


def test_many_layers_share_the_figure_budget_and_hide_the_legend():
    fig = update_ratio.figure([_run(n_layers=40)], View(["r"]))
    per_layer = traces(fig, key=Keys.UPDATE_RATIO, stat="mean")
    assert len(per_layer) == 40 and not any(t["showlegend"] for t in per_layer)


def test_runs_side_by_side():
    fig = update_ratio.figure([_run("a"), _run("b")], View(["a", "b"]))
    axes = {t["meta"]["live"]["run"]: t["xaxis"] for t in traces(fig, stat="mean")}
    assert axes["a"] != axes["b"]


def test_placeholder():
    fig = update_ratio.figure([run_input("r")], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == update_ratio.MISSING
