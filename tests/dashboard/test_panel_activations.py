"""Activation statistics panel: four heatmaps with bars; statistics nobody recorded are left out."""

from __future__ import annotations

import numpy as np

from dashboard import settings
from dashboard.panels import activations
from dashboard.panels.base import View
from instrument.store import schema
from tests.dashboard.panel_inputs import decode, heatmaps, run_input, series, traces

Keys = schema.Keys
MODULES = ["0", "1", "2"]


def _run(run_id="r"):
    steps = np.arange(0, 50, 10)
    mean = np.outer(steps, [-1.0, 0.0, 1.0])
    std = np.outer(1 + steps, [1.0, 2.0, 4.0])
    dead = np.outer(steps / 100, [0.0, 1.0, 2.0])
    sat = np.full((5, 3), np.nan)  # ReLU network: no saturation fraction
    items = [series(k, steps, v, layers=MODULES) for k, v in
             ((Keys.ACT_MEAN, mean), (Keys.ACT_STD, std), (Keys.ACT_DEAD_FRAC, dead),
              (Keys.ACT_SATURATION_FRAC, sat))]
    bars = {k: (40, MODULES, ds.mean[-1]) for k, ds in
            ((ds.key, ds) for ds in items)}
    return run_input(run_id, series_list=items, bars=bars)


def test_recorded_statistics_only():
    assert activations.recorded([_run()]) == [Keys.ACT_MEAN, Keys.ACT_STD, Keys.ACT_DEAD_FRAC]
    fig = activations.figure([_run()], View(["r"]))
    assert fig["layout"]["meta"]["not_recorded"] == ["saturation fraction"]
    assert len(heatmaps(fig)) == 3 and len(traces(fig, type="bar")) == 3


def test_colour_scales_per_statistic():
    fig = activations.figure([_run()], View(["r"], step=20))
    mean, std, dead = heatmaps(fig)
    np.testing.assert_allclose(decode(mean["z"]), np.outer(np.arange(0, 50, 10),
                                                           [-1.0, 0.0, 1.0]).T)
    assert mean["zmid"] == 0.0
    np.testing.assert_allclose(decode(std["z"]),
                               np.log10(np.outer(1 + np.arange(0, 50, 10), [1, 2, 4])).T,
                               rtol=1e-6)
    lo, hi = settings.DEAD_FRACTION_RANGE
    assert (dead["zmin"], dead["zmax"]) == (lo, hi)
    assert dead["colorscale"] == settings.FRACTION_COLOURSCALE
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert "mean" in titles and "std" in titles and "dead-unit fraction" in titles


def test_side_by_side_for_compared_runs():
    fig = activations.figure([_run("a"), _run("b")], View(["a", "b"]))
    heats = heatmaps(fig)
    assert len(heats) == 6 and len({t["xaxis"] for t in heats}) == 6
    assert "a: mean" in [a["text"] for a in fig["layout"]["annotations"]]


def test_placeholder_when_nothing_recorded():
    item = run_input("r", series_list=[series(Keys.ACT_MEAN, [0, 1], np.full((2, 3), np.nan),
                                              layers=MODULES)])
    fig = activations.figure([item], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == activations.MISSING
