"""The Cockpit panels: pure figure functions over what the reader returns for a real store.

The store is written with the real StoreWriter (no torch), read back with the real reader, and
each panel's figure is checked against the values read.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest

from dashboard.panels import (cockpit_alpha, cockpit_curvature, cockpit_distance,
                              cockpit_gradient_tests, cockpit_hist_1d, cockpit_hist_2d,
                              cockpit_noise, cockpit_tic)
from instrument.store import schema
from instrument.store.reader import load, store_path
from instrument.store.records import LayerValues, StepData
from instrument.store.schema import CockpitKeys as CK, HistogramBins, Keys
from instrument.store.writer import StoreWriter

PARAMS = ["0.weight", "0.bias", "2.weight"]
STEPS = 30
H1 = HistogramBins.labels_1d(-2, 2, 10)
H2 = HistogramBins.labels_2d((-1, 1, 4), (-2, 2, 5))
PANELS = (cockpit_alpha, cockpit_curvature, cockpit_distance, cockpit_gradient_tests,
          cockpit_hist_1d, cockpit_hist_2d, cockpit_noise, cockpit_tic)


def _values(step):
    rng = np.random.default_rng(step)
    per = {k: rng.uniform(0.1, 2.0, len(PARAMS)) for k in CK.PER_LAYER}
    return rng, per


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("cockpit_run")
    writer = StoreWriter(store_path(str(d)), {"name": "c"}, flush_interval=0.05)
    for step in range(STEPS):
        rng, per = _values(step)
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
        if step >= 1:  # alpha of the previous step, written one step late
            writer.submit(StepData(step - 1, wall_time=999.0 + step, layers={
                CK.ALPHA: LayerValues([CK.ALPHA_COLUMN], [math.sin(step)])}))
    writer.close()
    return load(str(d))


def _inputs(run, panel, step=None, **view):
    """What the dashboard hands a panel: series read from the store, and values at a step."""
    keys = {schema.SCALAR: run.keys(schema.SCALAR), schema.LAYER: run.keys(schema.LAYER)}
    item = SimpleNamespace(label="run", colour="#1f77b4", series={}, bars={})
    at = STEPS - 1 if step is None else step
    for key, kind, draw in panel.needs(keys, ()):
        if key not in keys[kind]:
            continue
        if draw == "bars":
            item.bars[key] = run.at_step(key, at)
        else:
            item.series[key] = run.series(key, kind)
    return [item], SimpleNamespace(step=step, layer=view.get("layer"),
                                   options=tuple(view.get("options", ())))


def _traces(fig, **match):
    return [t for t in fig["data"] if all((t.get("meta") or {}).get(k, t.get(k)) == v
                                          for k, v in match.items())]


@pytest.mark.parametrize("panel", PANELS, ids=lambda p: p.NAME)
def test_every_panel_says_what_is_missing(panel):
    empty = SimpleNamespace(label="r", colour="#000", series={}, bars={})
    fig = panel.figure([empty], SimpleNamespace(step=None, layer=None, options=()))
    assert fig["layout"]["meta"]["placeholder"] == panel.MISSING
    assert panel.NAME.startswith("cockpit_") and panel.TITLE and panel.REQUIRES


def test_alpha_gauge_all_against_recent(run):
    runs, view = _inputs(run, cockpit_alpha, step=12)
    fig = cockpit_alpha.figure(runs, view)
    alpha = np.sin(np.arange(1, STEPS))  # stored under steps 0 .. STEPS-2
    all_bar, = _traces(fig, part="all")
    recent, = _traces(fig, part="recent")
    centers, dens = cockpit_alpha.histogram(alpha)
    np.testing.assert_allclose(all_bar["y"], dens)
    n = math.ceil(0.1 * len(alpha))
    np.testing.assert_allclose(recent["y"], cockpit_alpha.histogram(alpha[-n:])[1])
    assert sum(all_bar["y"]) * (centers[1] - centers[0]) == pytest.approx(1.0)
    line, = _traces(fig, key=CK.ALPHA)
    assert line["x"] == list(range(STEPS - 1))
    np.testing.assert_allclose(line["y"], alpha, rtol=1e-6)
    assert [s["x0"] for s in fig["layout"]["shapes"] if s.get("name") == "cursor"] == [12]


def test_distance_and_update_size(run):
    runs, view = _inputs(run, cockpit_distance, step=7, options=["ema"])
    fig = cockpit_distance.figure(runs, view)
    dist, = _traces(fig, key=CK.total(CK.DISTANCE), layer=None, mode="lines+markers")
    want = [_values(s)[1][CK.DISTANCE].sum() for s in range(STEPS)]
    np.testing.assert_allclose(dist["y"], want, rtol=1e-6)
    ema = [t for t in fig["data"] if (t.get("meta") or {}).get("ema")]
    assert len(ema) == 2  # distance and update size
    np.testing.assert_allclose(ema[0]["y"][:2], [want[0], 0.2 * want[1] + 0.8 * want[0]],
                               rtol=1e-6)
    bars, = _traces(fig, type="bar")
    assert bars["meta"]["at_step"] == 7
    np.testing.assert_allclose(bars["x"], _values(7)[1][CK.DISTANCE], rtol=1e-6)
    assert bars["y"] == PARAMS


def test_gradient_tests_lines_and_bars(run):
    runs, view = _inputs(run, cockpit_gradient_tests, step=3, options=["logy"])
    fig = cockpit_gradient_tests.figure(runs, view)
    for key, _ in cockpit_gradient_tests.TESTS:
        line, = _traces(fig, key=CK.total(key))
        np.testing.assert_allclose(line["y"], [_values(s)[1][key].sum() for s in range(STEPS)],
                                   rtol=1e-6)
        bar, = _traces(fig, key=key, type="bar")
        np.testing.assert_allclose(bar["x"], _values(3)[1][key], rtol=1e-6)
    assert all(fig["layout"][a]["type"] == "log" for a in ("yaxis", "yaxis2", "yaxis3"))


def test_histogram_at_the_replay_step_all_and_per_layer(run):
    runs, view = _inputs(run, cockpit_hist_1d, step=5)
    fig = cockpit_hist_1d.figure(runs, view)
    bar, = fig["data"]
    assert bar["meta"]["at_step"] == 5 and bar["meta"]["key"] == CK.GRAD_HIST_1D
    np.testing.assert_allclose(bar["y"], np.arange(10) + 5)
    np.testing.assert_allclose(bar["x"], np.linspace(-1.8, 1.8, 10), atol=1e-9)
    runs, view = _inputs(run, cockpit_hist_1d, step=6, layer="0.weight", options=["logy"])
    fig = cockpit_hist_1d.figure(runs, view)
    bar, = fig["data"]
    assert bar["meta"]["key"] == CK.hist_1d_of("0.weight")
    np.testing.assert_allclose(bar["y"], np.full(10, 6))
    assert fig["layout"]["yaxis"]["type"] == "log"


def test_2d_histogram_heatmap(run):
    runs, view = _inputs(run, cockpit_hist_2d, step=4)
    fig = cockpit_hist_2d.figure(runs, view)
    heat, = fig["data"]
    counts = (np.arange(20.0) * 4).reshape(4, 5)  # gradient-major in the store
    np.testing.assert_allclose(heat["z"], np.log10(counts.T + 1), rtol=1e-6)
    np.testing.assert_allclose(heat["x"], [-0.75, -0.25, 0.25, 0.75])
    np.testing.assert_allclose(heat["y"], [-1.6, -0.8, 0.0, 0.8, 1.6], atol=1e-9)
    assert heat["meta"]["total"] == pytest.approx(counts.sum())


def test_curvature_band_and_trace(run):
    runs, view = _inputs(run, cockpit_curvature, step=9)
    fig = cockpit_curvature.figure(runs, view)
    ev, = _traces(fig, key=CK.HESS_MAX_EV)
    np.testing.assert_allclose(ev["y"], 10.0 + np.arange(STEPS))
    band, = _traces(fig, band="residual")
    hi = (10.0 + np.arange(STEPS)) * 1.05
    np.testing.assert_allclose(band["y"][:STEPS], hi, rtol=1e-6)
    trace, = _traces(fig, key=CK.total(CK.HESS_TRACE))
    np.testing.assert_allclose(trace["y"], [_values(s)[1][CK.HESS_TRACE].sum()
                                            for s in range(STEPS)], rtol=1e-6)
    bar, = _traces(fig, type="bar")
    np.testing.assert_allclose(bar["x"], _values(9)[1][CK.HESS_TRACE], rtol=1e-6)


def test_tic_and_noise_panels(run):
    runs, view = _inputs(run, cockpit_tic)
    fig = cockpit_tic.figure(runs, view)
    for key, _ in cockpit_tic.TOTALS:
        line, = _traces(fig, key=key)
        base = key[: -len("/total")]
        np.testing.assert_allclose(line["y"], [_values(s)[1][base].sum() for s in range(STEPS)],
                                   rtol=1e-6)
    runs, view = _inputs(run, cockpit_noise)
    fig = cockpit_noise.figure(runs, view)
    assert len([t for t in fig["data"] if t["type"] == "scatter"]) == 3
    stop = [s for s in fig["layout"]["shapes"] if s.get("name") == "stop above"]
    assert stop and stop[0]["y0"] == 0


def test_compared_runs_overlay(run):
    a, view = _inputs(run, cockpit_gradient_tests, step=2)
    b, _ = _inputs(run, cockpit_gradient_tests, step=2)
    b[0].label, b[0].colour = "other", "#ff7f0e"
    fig = cockpit_gradient_tests.figure(a + b, view)
    lines = _traces(fig, key=CK.total(CK.NORM_TEST))
    assert {t["line"]["color"] for t in lines} == {"#1f77b4", "#ff7f0e"}
