"""The Cockpit panels: figures over what the dashboard's loader reads from a real store.

The store is written with the real StoreWriter (no torch) and read with the real loader
(``base.load`` over a ``RunCatalog``); each figure is checked against the values written.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from dashboard import refresh
from dashboard.panels import (
    COCKPIT,
    PANELS,
    base,
    cockpit_alpha,
    cockpit_curvature,
    cockpit_distance,
    cockpit_gradient_tests,
    cockpit_hist_1d,
    cockpit_hist_2d,
    cockpit_noise,
    cockpit_tic,
)
from dashboard.panels.base import View
from dashboard.runs import RunCatalog
from instrument.store.reader import store_path
from instrument.store.records import LayerValues, StepData
from instrument.store.schema import CockpitKeys as CK
from instrument.store.schema import HistogramBins, Keys
from instrument.store.writer import StoreWriter
from tests.dashboard.panel_inputs import decode, run_input, traces

PARAMS = ["0.weight", "0.bias", "2.weight"]
STEPS = 30
H1 = HistogramBins.labels_1d(-2, 2, 10)
H2 = HistogramBins.labels_2d((-1, 1, 4), (-2, 2, 5))


def _values(step):
    rng = np.random.default_rng(step)
    return {k: rng.uniform(0.1, 2.0, len(PARAMS)) for k in CK.PER_LAYER}


def write_cockpit_run(run_dir: str) -> None:
    """A finished run with every Cockpit series for ``STEPS`` steps (values from
    :func:`_values`, histograms growing with the step, alpha one step late)."""
    os.makedirs(run_dir, exist_ok=True)
    writer = StoreWriter(store_path(run_dir), {"name": os.path.basename(run_dir)},
                         flush_interval=0.05)
    for step in range(STEPS):
        per = _values(step)
        data = StepData(step, wall_time=1000.0 + step)
        for key, vals in per.items():
            data.layers[key] = LayerValues(PARAMS, vals)
            data.scalars[CK.total(key)] = float(vals.sum())
        data.scalars[CK.HESS_MAX_EV] = 10.0 + step
        data.scalars[CK.HESS_MAX_EV_RESIDUAL] = 0.05
        data.scalars[Keys.UPDATE_NORM_TOTAL] = 0.1 * step
        data.layers[CK.GRAD_HIST_1D] = LayerValues(H1, np.arange(10) + step)
        data.layers[CK.hist_1d_of("0.weight")] = LayerValues(H1, np.full(10, step))
        data.layers[CK.GRAD_HIST_2D] = LayerValues(H2, np.arange(20.0) * step)
        writer.submit(data)
        if step >= 1:  # alpha of the previous step arrives one step late
            writer.submit(StepData(step - 1, wall_time=999.0 + step, layers={
                CK.ALPHA: LayerValues([CK.ALPHA_COLUMN], [math.sin(step)])}))
    writer.close(steps=STEPS)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    write_cockpit_run(str(root / "c"))
    return RunCatalog(str(root))


def _figure(panel, catalog, step=None, layer=None, options=()):
    view = View(["c"], step=step, layer=layer, options=tuple(options))
    items = base.load(panel, catalog, view)
    assert all(item.error is None for item in items)
    return panel.figure(items, view), items


def test_registered_in_cockpits_order():
    assert [p.NAME for p in COCKPIT] == [
        "cockpit_alpha", "cockpit_distance", "cockpit_gradient_tests", "cockpit_hist_1d",
        "cockpit_hist_2d", "cockpit_curvature", "cockpit_tic", "cockpit_noise"]
    assert set(COCKPIT) <= set(PANELS)


@pytest.mark.parametrize("panel", COCKPIT, ids=lambda p: p.NAME)
def test_every_panel_says_what_is_missing(panel):
    fig = panel.figure([run_input("r")], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == panel.MISSING
    assert panel.TITLE and panel.REQUIRES


def test_alpha_gauge_all_against_recent(catalog):
    fig, _ = _figure(cockpit_alpha, catalog, step=12)
    alpha = np.sin(np.arange(1, STEPS))  # stored under steps 0 .. STEPS-2
    all_bar, = [t for t in fig["data"] if (t.get("meta") or {}).get("part") == "all"]
    recent, = [t for t in fig["data"] if (t.get("meta") or {}).get("part") == "recent"]
    centers, dens = cockpit_alpha.histogram(alpha)
    np.testing.assert_allclose(all_bar["y"], dens, rtol=1e-6)
    np.testing.assert_allclose(recent["y"], cockpit_alpha.histogram(alpha[-3:])[1], rtol=1e-6)
    assert sum(all_bar["y"]) * (centers[1] - centers[0]) == pytest.approx(1.0)
    line, = traces(fig, key=CK.ALPHA, stat="mean")
    assert decode(line["x"]).tolist() == list(range(STEPS - 1))  # live-appendable
    np.testing.assert_allclose(decode(line["y"]), alpha, rtol=1e-4)
    assert [s["x0"] for s in fig["layout"]["shapes"] if s.get("name") == "cursor"] == [12]


def test_gradient_tests_lines_and_bars_follow_the_step(catalog):
    fig, _ = _figure(cockpit_gradient_tests, catalog, step=3, options=["logy"])
    for key, _ in cockpit_gradient_tests.TESTS:
        line, = traces(fig, key=CK.total(key), stat="mean")
        np.testing.assert_allclose(decode(line["y"]),
                                   [_values(s)[key].sum() for s in range(STEPS)], rtol=1e-4)
        bar, = traces(fig, type="bar", at_key=key)
        assert bar["meta"]["at_step"]["step"] == 3 and bar["y"] == PARAMS
        np.testing.assert_allclose(bar["x"], _values(3)[key], rtol=1e-4)
    assert all(fig["layout"][a]["type"] == "log" for a in ("yaxis", "yaxis2", "yaxis3"))
    state = refresh._state(fig, View(["c"], step=3), [], None)
    assert len(state["bars"]) == 3 and len(state["cursors"]) == 3


def test_distance_with_ema(catalog):
    fig, _ = _figure(cockpit_distance, catalog, step=7, options=["ema"])
    want = [_values(s)[CK.DISTANCE].sum() for s in range(STEPS)]
    raw, = [t for t in traces(fig, key=CK.total(CK.DISTANCE), stat="mean")
            if t["meta"]["live"]["ema"] is None]
    np.testing.assert_allclose(decode(raw["y"]), want, rtol=1e-4)
    ema = [t for t in traces(fig, key=CK.total(CK.DISTANCE)) if t["meta"]["live"]["ema"]]
    assert len(ema) == 1
    update, = [t for t in traces(fig, key=Keys.UPDATE_NORM_TOTAL, stat="mean")
               if t["meta"]["live"]["ema"] is None]
    np.testing.assert_allclose(decode(update["y"]), 0.1 * np.arange(STEPS), atol=1e-6)
    bar, = traces(fig, type="bar")
    np.testing.assert_allclose(bar["x"], _values(7)[CK.DISTANCE], rtol=1e-4)


def test_histogram_at_the_replay_step_all_and_per_layer(catalog):
    fig, _ = _figure(cockpit_hist_1d, catalog, step=5)
    bar, = fig["data"]
    assert bar["meta"]["at_step"] == {"run": "c", "key": CK.GRAD_HIST_1D, "step": 5}
    assert bar["y"] == H1  # bins as categories: the framework moves them with the step
    np.testing.assert_allclose(bar["x"], np.arange(10) + 5)
    fig, _ = _figure(cockpit_hist_1d, catalog, step=6, layer="0.weight", options=["logx"])
    bar, = fig["data"]
    assert bar["meta"]["at_step"]["key"] == CK.hist_1d_of("0.weight")
    np.testing.assert_allclose(bar["x"], np.full(10, 6))
    assert fig["layout"]["xaxis"]["type"] == "log"


def test_2d_histogram_heatmap_is_redrawn_at_each_step(catalog):
    assert cockpit_hist_2d.GRAPH is False and "last" in cockpit_hist_2d.RERENDER_ON
    for step in (4, 9):
        fig, items = _figure(cockpit_hist_2d, catalog, step=step)
        heat, = fig["data"]
        counts = (np.arange(20.0) * step).reshape(4, 5)  # gradient-major in the store
        np.testing.assert_allclose(decode(heat["z"]), np.log10(counts.T + 1), rtol=1e-5)
        np.testing.assert_allclose(decode(heat["x"]), [-0.75, -0.25, 0.25, 0.75])
        assert heat["y"] == ["-1.6", "-0.8", "0", "0.8", "1.6"]
        assert heat["meta"]["step"] == step
        assert heat["meta"]["total"] == pytest.approx(counts.sum())
        graph = cockpit_hist_2d.extra(items, View(["c"], step=step))
        assert graph.figure["data"][0]["meta"]["step"] == step


def test_curvature_band_and_trace(catalog):
    fig, _ = _figure(cockpit_curvature, catalog, step=9)
    ev, = traces(fig, key=CK.HESS_MAX_EV, stat="mean")
    np.testing.assert_allclose(decode(ev["y"]), 10.0 + np.arange(STEPS))
    lo, hi = [t for t in fig["data"] if (t.get("meta") or {}).get("band") == "residual"]
    np.testing.assert_allclose(decode(hi["y"]), (10.0 + np.arange(STEPS)) * 1.05, rtol=1e-4)
    np.testing.assert_allclose(decode(lo["y"]), (10.0 + np.arange(STEPS)) * 0.95, rtol=1e-4)
    trace, = traces(fig, key=CK.total(CK.HESS_TRACE), stat="mean")
    np.testing.assert_allclose(decode(trace["y"]),
                               [_values(s)[CK.HESS_TRACE].sum() for s in range(STEPS)],
                               rtol=1e-4)
    bar, = traces(fig, type="bar")
    np.testing.assert_allclose(bar["x"], _values(9)[CK.HESS_TRACE], rtol=1e-4)


def test_tic_and_noise(catalog):
    fig, _ = _figure(cockpit_tic, catalog)
    for key, _ in cockpit_tic.TOTALS:
        line, = traces(fig, key=key, stat="mean")
        base_key = key[: -len("/total")]
        np.testing.assert_allclose(decode(line["y"]),
                                   [_values(s)[base_key].sum() for s in range(STEPS)],
                                   rtol=1e-4)
    fig, _ = _figure(cockpit_noise, catalog)
    assert len(traces(fig, stat="mean")) == 3
    zero = [s for s in fig["layout"]["shapes"] if s.get("name") == "reference"]
    assert zero and zero[0]["y0"] == 0 and zero[0]["yref"] == "y3"


def test_compared_runs_overlay(catalog):
    view = View(["c", "c"], step=2)
    a, b = base.load(cockpit_gradient_tests, catalog, view)
    b.id, b.label, b.colour = "d", "other", "#ff7f0e"
    fig = cockpit_gradient_tests.figure([a, b], view)
    lines = traces(fig, key=CK.total(CK.NORM_TEST), stat="mean")
    assert {t["line"]["color"] for t in lines} == {a.colour, "#ff7f0e"}
    assert len(traces(fig, type="bar")) == 6  # three tests per run, side by side


def test_gradient_tests_draw_their_threshold_line_in_every_plot():
    import numpy as np

    from dashboard.panels import cockpit_gradient_tests as gt
    from dashboard.panels.base import View
    from tests.dashboard.panel_inputs import run_input, series

    steps = np.arange(5)
    item = run_input("r", series_list=[series(k, steps, steps * 0.5) for k, _ in gt.TOTALS])
    fig = gt.figure([item], View(["r"]))
    lines = [s for s in fig["layout"]["shapes"] if s["name"] == "reference"]
    assert len(lines) == len(gt.TOTALS) and {s["y0"] for s in lines} == {1.0}
    assert {s["yref"] for s in lines} == {"y", "y2", "y3"}


def test_alpha_symlog_keeps_sign_and_order_and_labels_raw_values():
    import numpy as np

    from dashboard.panels import cockpit_alpha as ca

    raw = np.array([-1000.0, -1.0, 0.0, 0.5, 1.0, 1000.0])
    out = ca.symlog(raw)
    np.testing.assert_allclose(out, np.sign(raw) * np.log10(1 + np.abs(raw)))  # by hand
    assert list(np.argsort(out)) == list(np.argsort(raw)) and out[2] == 0
    trace = ca.symlog_trace({"y": [1000.0, None], "x": [0, 1], "meta": {"live": {}}})
    assert trace["y"] == [float(np.log10(1001.0)), None] and "meta" not in trace
    assert trace["customdata"] == [1000.0, None]
