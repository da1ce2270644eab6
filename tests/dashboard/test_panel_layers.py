"""The generic per-layer panel: any layer series no other panel draws, from a real run."""

from __future__ import annotations

import numpy as np

from dashboard.panels import PANELS, base, layers
from dashboard.panels.base import View
from dashboard.runs import RunCatalog
from instrument.store import schema
from instrument.store.reader import store_path
from instrument.store.records import LayerValues, StepData
from instrument.store.writer import StoreWriter
from tests.dashboard import stores
from tests.dashboard.panel_inputs import decode


def test_it_draws_only_series_no_other_panel_reads(tmp_path):
    keys = {schema.SCALAR: [], schema.LAYER: ["grad_norm", "act/mean", "weight_norm",
                                              "grad_stale", "my/new_thing"]}
    assert [n.key for n in layers.needs(keys, ()) if n.draw == base.HEATMAP] == [
        "my/new_thing", "weight_norm"]
    others = [p for p in PANELS if p is not layers]
    for n in layers.needs(keys, ()):  # brute force: no other panel asks for it
        assert not any(m.key == n.key for p in others
                       for m in p.needs(keys, tuple(v for v, _ in p.OPTIONS)))


def test_a_new_per_layer_quantity_is_drawn_with_its_values(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    writer = StoreWriter(store_path(str(run_dir)), stores.meta("r"), flush_interval=0.05)
    for s in range(10):
        d = StepData(s, wall_time=stores.WALL0 + s, scalars={"loss": 1.0})
        d.layers["my/new_thing"] = LayerValues(("a", "b"), [s * 1.0, s * 2.0])
        writer.submit(d)
    writer.close(steps=10)
    items = base.load(layers, RunCatalog(str(tmp_path)), View(["r"]))
    fig = layers.figure(items, View(["r"]))
    heat, = [t for t in fig["data"] if t["type"] == "heatmap"]
    assert heat["y"] == ["a", "b"]
    np.testing.assert_allclose(decode(heat["z"]), [np.arange(10.0), 2 * np.arange(10.0)])
    assert fig["layout"]["meta"]["keys"] == ["my/new_thing"]


def test_built_in_scalars_no_other_panel_draws_are_lines(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    writer = StoreWriter(store_path(str(run_dir)), stores.meta("r"), flush_interval=0.05)
    for s in range(10):
        writer.submit(StepData(s, wall_time=stores.WALL0 + s, scalars={
            "loss": 1.0, "acc": 0.5, "momentum/0": 0.9, "weight_norm/total": 3.0 + s,
            "input/mean": 7.0, "grad_norm/total": 1.0}))
    writer.close(steps=10)
    items = base.load(layers, RunCatalog(str(tmp_path)), View(["r"]))
    fig = layers.figure(items, View(["r"]))
    lines = {t["name"]: t for t in fig["data"] if t.get("type") == "scatter"
             and t.get("mode") == "lines" and t.get("showlegend", True)}
    # built-in, undrawn elsewhere: yes; the user's metrics, diagnosis facts and the gradient
    # panel's total: no
    assert set(lines) == {"momentum/0", "weight_norm/total"}
    np.testing.assert_allclose(decode(lines["weight_norm/total"]["y"]), 3.0 + np.arange(10))
    assert fig["layout"]["meta"]["keys"] == ["momentum/0", "weight_norm/total"]
