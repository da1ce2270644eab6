"""Learning rate panel: lr per param group, effective learning rate per layer."""

from __future__ import annotations

import numpy as np

from dashboard.panels import learning_rate
from dashboard.panels.base import View
from instrument.store import schema
from tests.dashboard.panel_inputs import decode, run_input, series, traces

Keys = schema.Keys


def _run(run_id="r"):
    steps = np.arange(30)
    return run_input(run_id, series_list=[
        series("lr/0", steps, 0.1 * (1 - steps / 30)), series("lr/1", steps, 0.01 + 0 * steps),
        series(Keys.EFFECTIVE_LR, steps, np.outer(1 + steps, [0.1, 0.2]),
               layers=["a.weight", "a.bias"])])


def test_needs_group_lrs_and_effective_lr():
    keys = {schema.SCALAR: ["loss", "lr/0", "lr/1", "momentum/0"], schema.LAYER: []}
    assert [n.key for n in learning_rate.needs(keys, ())] == ["lr/0", "lr/1", Keys.EFFECTIVE_LR]


def test_group_lines_and_per_layer_lines():
    fig = learning_rate.figure([_run()], View(["r"], step=5))
    g0, = traces(fig, key="lr/0", stat="mean")
    np.testing.assert_allclose(decode(g0["y"]), 0.1 * (1 - np.arange(30) / 30), rtol=1e-5)
    assert g0["xaxis"] == traces(fig, key="lr/1", stat="mean")[0]["xaxis"] == "x"
    eff = traces(fig, key=Keys.EFFECTIVE_LR, stat="mean")
    assert [t["meta"]["live"]["layer"] for t in eff] == ["a.weight", "a.bias"]
    assert {t["xaxis"] for t in eff} == {"x2"}
    assert fig["layout"]["yaxis2"]["type"] == "log"
    assert "type" not in fig["layout"]["yaxis"]
    logy = learning_rate.figure([_run()], View(["r"], options=(learning_rate.LOG_Y,)))
    assert logy["layout"]["yaxis"]["type"] == "log"


def test_compare_overlays_groups_and_splits_layers():
    fig = learning_rate.figure([_run("a"), _run("b")], View(["a", "b"]))
    assert {t["xaxis"] for t in traces(fig, key="lr/0")} == {"x"}
    assert len({t["xaxis"] for t in traces(fig, key=Keys.EFFECTIVE_LR)}) == 2
    assert {t["name"] for t in traces(fig, key="lr/0")} == {"a lr/0", "b lr/0"}


def test_placeholder():
    fig = learning_rate.figure([run_input("r")], View(["r"]))
    assert fig["layout"]["meta"]["placeholder"] == learning_rate.MISSING
