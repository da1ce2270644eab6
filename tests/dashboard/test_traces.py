"""Traces shared by several panels (dashboard.panels.traces), each on its own."""

from __future__ import annotations

import numpy as np

from dashboard import settings
from dashboard.figures import Grid
from dashboard.panels import traces
from dashboard.panels.base import View
from tests.dashboard.panel_inputs import decode, run_input, series

LAYERS = ["a", "b", "c"]


def _cell():
    return Grid([(100, [1])]).cells[0][0]


def test_scalar_lines_raw_band_and_ema():
    steps = np.arange(0, 32, 4)
    raw = run_input("r", series_list=[series("loss", np.arange(8), np.arange(8.0))])
    out = traces.scalar_lines(_cell(), raw, "loss", name="r", colour="#000")
    assert len(out) == 1 and out[0]["y"] == list(np.arange(8.0))
    coarse = run_input("r", series_list=[series("loss", steps, np.ones(8), level=1,
                                                lo=np.zeros(8), hi=2 * np.ones(8))])
    out = traces.scalar_lines(_cell(), coarse, "loss", name="r", colour="#000", smooth=True)
    assert [t["meta"]["live"]["stat"] for t in out] == ["min", "max", "mean", "mean"]
    assert out[-1]["meta"]["live"]["ema"] is not None and out[-2]["opacity"] < 1
    assert all(t["meta"]["live"]["size"] == 4 for t in out)
    assert traces.scalar_lines(_cell(), coarse, "missing", name="r", colour="#000") == []


def test_layer_lines_skip_layers_never_recorded():
    mat = np.array([[1.0, np.nan, 3.0], [2.0, np.nan, 4.0]])
    item = run_input("r", series_list=[series("k", [0, 1], mat, layers=LAYERS)])
    out = traces.layer_lines(_cell(), item, "k", colours=traces.layer_colours(3))
    assert [t["meta"]["live"]["layer"] for t in out] == ["a", "c"]
    assert out[1]["y"] == [3.0, 4.0] and out[0]["line"]["color"] != out[1]["line"]["color"]


def test_layer_heatmap_linear_and_log():
    mat = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, 0.0]])
    item = run_input("r", series_list=[series("k", [5, 6], mat, layers=LAYERS)])
    lin = traces.layer_heatmap(_cell(), item, "k", log=False, colourscale="Viridis", label="x",
                               zrange=(0, 1))
    np.testing.assert_allclose(decode(lin["z"]), mat.T)
    assert (lin["zmin"], lin["zmax"]) == (0, 1)
    log = traces.layer_heatmap(_cell(), item, "k", log=True, colourscale="Viridis", label="x")
    np.testing.assert_allclose(decode(log["z"]), np.log10(np.where(mat > 0, mat, np.nan)).T,
                               rtol=1e-6, equal_nan=True)
    assert log["colorbar"]["tickvals"] == [0, 1, 2]
    assert traces.layer_heatmap(_cell(), item, "nope", log=False, colourscale="x",
                                label="x") is None


def test_layer_bars_are_capped_and_tagged():
    many = [f"l{i}" for i in range(settings.MAX_BAR_LAYERS + 5)]
    item = run_input("r", bars={"k": (9, many, np.arange(len(many), dtype=float))})
    bar = traces.layer_bars(_cell(), item, "k", View(["r"], layer="l1"), "#000", "x")
    assert len(bar["y"]) == settings.MAX_BAR_LAYERS
    assert bar["meta"]["at_step"] == {"run": "r", "key": "k", "step": 9}
    assert bar["marker"]["color"][1] == settings.HIGHLIGHT_COLOUR
    assert traces.layer_bars(_cell(), item, "nope", View(["r"]), "#000", "x") is None


def test_heatmap_rows_pair_heatmaps_with_bars_per_run():
    mat = np.ones((2, 3))
    items = [run_input(r, series_list=[series("k", [0, 1], mat, layers=LAYERS)],
                       bars={"k": (1, LAYERS, mat[1])}) for r in ("x", "y")]
    grid = Grid([(100, [4, 1, 4, 1])])
    data, shapes, notes = traces.heatmap_rows(grid, items, "k", 0, View(["x", "y"], step=1,
                                                                          layer="b"),
                                              label="k", log=False, colourscale="Viridis",
                                              bar_colour="#000")
    assert [t["type"] for t in data] == ["heatmap", "bar", "heatmap", "bar"]
    assert data[1]["yaxis"] != data[0]["yaxis"]
    assert grid.layout["yaxis2"]["matches"] == "y" and grid.layout["yaxis4"]["matches"] == "y3"
    assert sum(s["name"] == "cursor" for s in shapes) == 2
    assert sum(s["name"] == "highlight" for s in shapes) == 2
    assert notes[0]["text"] == "x: k"


def test_layer_colours():
    assert len(traces.layer_colours(3)) == 3
    ramp = traces.layer_colours(200)
    assert len(ramp) == 200 and ramp[0] == settings.LAYER_COLOURS[0]
    assert ramp[-1] == settings.LAYER_COLOURS[-1]


def test_zero_is_drawn_unlike_not_recorded_and_layers_name_their_module_class():
    import numpy as np

    from dashboard.figures import Grid
    from dashboard.panels.base import View
    from dashboard.panels.traces import heatmap_rows, layer_labels
    from tests.dashboard.panel_inputs import decode, run_input, series

    mean = np.array([[0.0, 1.0], [np.nan, 2.0], [0.5, 0.0]])  # [steps, layers]
    item = run_input("r", series_list=[series("g", [0, 1, 2], mean, layers=["0.weight", "1"])],
                     meta={"model": {"layers": [{"name": "0", "type": "Linear"},
                                                {"name": "1", "type": "ReLU"}]}})
    grid = Grid([(200, [4, 1])])
    data, _, _ = heatmap_rows(grid, [item], "g", 0, View(["r"]), label="g", log=True,
                              colourscale="Viridis", bar_colour="#000")
    zero, = [t for t in data if t.get("name") == "zero"]
    z = decode(zero["z"])  # 1 exactly where the value is 0; NaN (nothing) elsewhere
    np.testing.assert_array_equal(np.isfinite(z), [[True, False, False], [False, False, True]])
    heat = [t for t in data if t["type"] == "heatmap" and t.get("name") != "zero"][0]
    assert np.isnan(decode(heat["z"])[0, 1])  # not recorded: no colour at all
    assert grid.layout["yaxis"]["ticktext"] == ["0.weight (Linear)", "1 (ReLU)"]
    assert layer_labels(["x"], {}) == ["x"]
