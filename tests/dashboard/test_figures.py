"""Shared figure builders (dashboard.figures)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dashboard import figures, settings
from tests.dashboard.panel_inputs import decode


def test_grid_cells_tile_without_overlap():
    grid = figures.Grid([(200, [1]), (300, [4, 1, 4, 1])])
    assert [len(r) for r in grid.cells] == [1, 4]
    top, (a, b, c, d) = grid.cells[0][0], grid.cells[1]
    assert top.xref == "x" and top.yref == "y" and d.xref == "x5"
    assert top.y[0] > a.y[1]  # the second row is below the first, with a gap
    assert a.x[1] < b.x[0] < b.x[1] < c.x[0] < c.x[1] < d.x[0] <= d.x[1] <= 1.0
    assert (a.x[1] - a.x[0]) == pytest.approx(4 * (b.x[1] - b.x[0]))
    # pixel heights are kept: the row of 300 px is 1.5 times the row of 200 px
    assert (a.y[1] - a.y[0]) == pytest.approx(1.5 * (top.y[1] - top.y[0]))
    assert grid.layout["height"] == 200 + 300 + figures.GAP_PX + figures.MARGIN["t"] + \
        figures.MARGIN["b"]
    assert grid.layout["xaxis5"]["anchor"] == "y5" and grid.axis(d, "y") is grid.layout["yaxis5"]


def test_placeholder_says_why():
    fig = figures.placeholder("nothing here because X")
    assert fig["data"] == [] and fig["layout"]["meta"]["placeholder"] == "nothing here because X"
    assert fig["layout"]["annotations"][0]["text"] == "nothing here because X"


def test_line_is_appendable_json():
    cell = figures.Grid([(100, [1])]).cells[0][0]
    tag = figures.live_tag("r", "loss", "scalar", cursor=9)
    trace = figures.line(cell, np.arange(3), np.array([1.0, np.nan, 1 / 3]), "loss", "#000",
                         live=tag)
    assert trace["x"] == [0, 1, 2] and trace["y"] == [1.0, None, 0.333333]
    assert trace["meta"]["live"]["cursor"] == 9 and trace["meta"]["live"]["ema"] is None
    json.dumps(trace)  # plain JSON, no numpy


def test_band_fills_between_min_and_max():
    cell = figures.Grid([(100, [1])]).cells[0][0]
    lo, hi = figures.band(cell, [3, 7], [0.0, 1.0], [2.0, 3.0], "#1f77b4", group="g")
    assert lo["y"] == [0.0, 1.0] and hi["y"] == [2.0, 3.0] and hi["fill"] == "tonexty"
    assert "fill" not in lo and hi["fillcolor"].startswith("rgba(31, 119, 180")


def test_heatmap_sends_float32_layers_by_steps():
    cell = figures.Grid([(100, [1])]).cells[0][0]
    z = np.array([[1.0, 2.0, np.nan], [4.0, 5.0, 6.0]])
    trace = figures.heatmap(cell, np.array([10, 20, 30]), ["a", "b"], z, colourscale="Viridis",
                            zmin=0, zmax=1)
    np.testing.assert_array_equal(decode(trace["z"]), z.astype(np.float32))
    assert list(decode(trace["x"])) == [10, 20, 30] and trace["y"] == ["a", "b"]
    assert trace["zmin"] == 0 and trace["zmax"] == 1 and trace["colorbar"]["len"] > 0


def test_bars_highlight_and_step_tag():
    cell = figures.Grid([(100, [1])]).cells[0][0]
    trace = figures.bars(cell, ["a", "b", "c"], [1.0, 2.0, 3.0], "#123456",
                         at_step={"run": "r", "key": "k", "step": 4}, highlight="b")
    assert trace["marker"]["color"] == ["#123456", settings.HIGHLIGHT_COLOUR, "#123456"]
    assert trace["orientation"] == "h" and trace["meta"]["at_step"]["step"] == 4


def test_shapes():
    cell = figures.Grid([(100, [1, 1])]).cells[0][1]
    cur = figures.cursor(cell, 12)
    assert (cur["x0"], cur["x1"], cur["visible"], cur["xref"]) == (12, 12, True, "x2")
    assert figures.cursor(cell, None)["visible"] is False
    band = figures.hband(cell, 1e-4, 1e-2)
    assert (band["y0"], band["y1"], band["xref"]) == (1e-4, 1e-2, "x2 domain")
    row = figures.row_highlight(cell, "fc.weight")
    assert row["y0"] == row["y1"] == "fc.weight"
    assert figures.hline(cell, 1e-3, "#000")["y0"] == 1e-3


def test_heights_and_colours():
    assert figures.heatmap_height(1) == settings.HEATMAP_MIN_PX
    assert figures.heatmap_height(10**4) == settings.HEATMAP_MAX_PX
    assert figures.run_colour(0) != figures.run_colour(1)
    assert figures.run_colour(len(settings.RUN_COLOURS)) == figures.run_colour(0)
    axis = figures.log_axis({})
    assert axis["type"] == "log" and axis["dtick"] == 1
