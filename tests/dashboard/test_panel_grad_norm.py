"""Gradient norm panel: global line, layer x step heatmap (log colours), bars at the step."""

from __future__ import annotations

import numpy as np

from dashboard import settings
from dashboard.panels import grad_norm
from dashboard.panels.base import View
from instrument.store import schema
from tests.dashboard.panel_inputs import cursors, decode, heatmaps, run_input, series, traces

Keys = schema.Keys
LAYERS = ["a.weight", "a.bias", "b.weight"]


def _run(run_id="r", scale=1.0):
    steps = np.arange(10)
    mat = scale * np.outer(1 + steps, [1.0, 10.0, 0.1])
    mat[3, 1] = np.nan  # not recorded
    mat[4, 2] = 0.0     # no log colour
    bars = (7, LAYERS, mat[7])
    return run_input(run_id, series_list=[
        series(Keys.GRAD_NORM_TOTAL, steps, np.sqrt(np.nansum(mat ** 2, axis=1))),
        series(Keys.GRAD_NORM, steps, mat, layers=LAYERS)], bars={Keys.GRAD_NORM: bars})


def test_needs():
    assert [(n.key, n.draw) for n in grad_norm.needs({}, ())] == [
        (Keys.GRAD_NORM_TOTAL, "line"), (Keys.GRAD_NORM, "heatmap"), (Keys.GRAD_NORM, "bars")]


def test_heatmap_is_log10_of_layers_by_steps():
    item = _run()
    fig = grad_norm.figure([item], View(["r"], step=7))
    heat, = heatmaps(fig)
    z = decode(heat["z"])
    expected = np.log10(np.where(item.series[Keys.GRAD_NORM].mean > 0,
                                 item.series[Keys.GRAD_NORM].mean, np.nan)).T
    np.testing.assert_allclose(z, expected.astype(np.float32), equal_nan=True)
    assert heat["y"] == LAYERS and list(decode(heat["x"])) == list(range(10))
    ticks = heat["colorbar"]["tickvals"]
    assert min(ticks) <= np.nanmin(expected) and max(ticks) >= np.nanmax(expected)
    assert heat["colorbar"]["ticktext"][0] == f"1e{ticks[0]}"


def test_bars_at_the_step_share_the_layer_axis():
    fig = grad_norm.figure([_run()], View(["r"], step=7, layer="a.bias"))
    bar, = traces(fig, type="bar")
    heat, = heatmaps(fig)
    assert bar["y"] == LAYERS and bar["meta"]["at_step"]["step"] == 7
    np.testing.assert_allclose(bar["x"], np.array([8.0, 80.0, 0.8]), rtol=1e-6)
    ylayout = fig["layout"]["yaxis" + bar["yaxis"][1:]]
    assert ylayout["matches"] == heat["yaxis"]
    assert fig["layout"]["xaxis" + bar["xaxis"][1:]]["type"] == "log"
    assert bar["marker"]["color"][1] == settings.HIGHLIGHT_COLOUR  # highlighted layer
    rows = [s for s in fig["layout"]["shapes"] if s["name"] == "highlight"]
    assert len(rows) == 1 and rows[0]["y0"] == "a.bias"


def test_global_norm_overlay_and_side_by_side_heatmaps():
    fig = grad_norm.figure([_run("a"), _run("b", 2.0)], View(["a", "b"], step=3))
    lines = traces(fig, key=Keys.GRAD_NORM_TOTAL, stat="mean")
    assert {t["xaxis"] for t in lines} == {"x"} and len(lines) == 2
    heats = heatmaps(fig)
    assert len({t["xaxis"] for t in heats}) == 2  # one plot per run
    assert [c["x0"] for c in cursors(fig)] == [3, 3, 3]


def test_placeholder():
    fig = grad_norm.figure([run_input("r")], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == grad_norm.MISSING


def test_before_clip_norm_is_drawn_dashed_where_recorded():
    keys = {schema.SCALAR: [Keys.GRAD_NORM_TOTAL, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP]}
    assert (Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, "line") in [
        (n.key, n.draw) for n in grad_norm.needs(keys, ())]
    item = _run()
    clipped = np.array([2, 5, 6])
    before = np.sqrt(np.nansum(item.series[Keys.GRAD_NORM].mean ** 2, axis=1))[clipped] * 3
    item = run_input("r", series_list=[*item.series.values(),
                                       series(Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, clipped, before)],
                     bars={Keys.GRAD_NORM: (7, LAYERS, item.series[Keys.GRAD_NORM].mean[7])})
    fig = grad_norm.figure([item], View(["r"], step=7))
    dashed = [t for t in traces(fig) if t.get("line", {}).get("dash") == "dash"]
    assert len(dashed) == 1 and dashed[0]["name"].endswith("(before clipping)")
    assert list(decode(dashed[0]["x"])) == clipped.tolist()
    np.testing.assert_allclose(decode(dashed[0]["y"]), before, rtol=1e-3)
    solid = [t for t in traces(fig) if t.get("name", "").endswith("(after clipping)")]
    assert len(solid) == 1
