"""The panel loader: series read from real stores within budget, bars at a step, bad runs."""

from __future__ import annotations

import numpy as np
import pytest

from dashboard import settings
from dashboard.panels import base, grad_norm, scalars
from dashboard.panels.base import BARS, HEATMAP, LINE, LINES, Need, View
from dashboard.runs import RunCatalog
from instrument.store import schema
from tests.dashboard import stores

Keys = schema.Keys


@pytest.fixture
def catalog(tmp_path):
    stores.write_run(str(tmp_path / "a"), steps=40)
    stores.write_run(str(tmp_path / "b"), steps=25, start=5)
    return RunCatalog(str(tmp_path))


def test_user_scalars_loss_first_and_no_builtins():
    keys = ["val/acc", "lr/0", Keys.GRAD_NORM_TOTAL, "loss", "acc", "momentum/1"]
    assert base.user_scalars(keys) == ["loss", "acc", "val/acc"]


def test_budgets_count_lines_and_heatmap_rows():
    needs = [[Need("loss", schema.SCALAR, LINE), Need("g", schema.LAYER, LINES),
              Need("g", schema.LAYER, HEATMAP), Need("g", schema.LAYER, BARS)]]
    per_line, cols = base.budgets(needs * 2, [{"g": 100}] * 2)
    assert per_line == settings.MAX_FIGURE_POINTS // (2 * (1 + 100))
    assert cols == settings.MAX_FIGURE_CELLS // 200


def test_load_reads_the_stored_values(catalog):
    view = View(["a", "b"])
    a, b = base.load(grad_norm, catalog, view)
    assert (a.first_step, a.last_step, b.first_step, b.last_step) == (0, 39, 5, 29)
    ds = a.series[Keys.GRAD_NORM]
    assert ds.level == 0 and list(ds.step) == list(range(40))
    expected = np.array([[stores.grad_norm(s, j) for j in range(len(stores.PARAMS))]
                         for s in range(40)])
    np.testing.assert_allclose(ds.mean, expected, rtol=1e-6)  # float32 storage
    step, layers, values = a.bars[Keys.GRAD_NORM]
    assert step == 39 and layers == list(stores.PARAMS)
    np.testing.assert_allclose(values, expected[-1], rtol=1e-6)
    assert a.colour != b.colour and a.n_series == b.n_series > 0


def test_bars_follow_the_view_step_and_sparse_series(catalog):
    from dashboard.panels import activations
    item, = base.load(activations, catalog, View(["a"], step=13))
    step, layers, values = item.bars[Keys.ACT_MEAN]
    assert step == 10  # activations every 5 steps: the last recorded at or before 13
    np.testing.assert_allclose(values, [stores.act(Keys.ACT_MEAN, 10, m) for m in range(3)],
                               rtol=1e-6)


def test_bad_and_unknown_runs_carry_a_message(catalog, tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "avionics.db").write_bytes(b"")
    catalog._scanned = -1e9
    items = base.load(scalars, catalog, View(["a", "broken", "../etc"]))
    assert items[0].error is None and "loss" in items[0].series
    assert "empty" in items[1].error
    assert "no run named" in items[2].error


def test_downsampled_series_cover_the_whole_range(tmp_path, monkeypatch):
    writer = stores.write_run(str(tmp_path / "r"), steps=203, close=False)
    try:
        monkeypatch.setattr(settings, "MAX_TRACE_POINTS", 60)
        monkeypatch.setattr(settings, "MAX_FIGURE_POINTS", 60)
        item, = base.load(scalars, RunCatalog(str(tmp_path)), View(["r"]))
        ds = item.series["loss"]
        assert ds.level > 0 and item.bucket("loss") == 4 ** ds.level
        assert len(ds.step) <= 60
        # up to the last step, with every point the mean of the steps it stands for
        assert ds.step[-1] == 202 and base.cursor_of(item, "loss") == 202
        means = [np.mean(stores.loss(np.arange(a, b + 1))) for a, b in zip(ds.first_step,
                                                                           ds.step)]
        np.testing.assert_allclose(ds.mean, means, rtol=1e-9)
        assert (ds.first_step[1:] == ds.step[:-1] + 1).all()  # no gap, no overlap
    finally:
        writer.close()


def test_every_panel_satisfies_the_declared_protocol():
    import fnmatch

    from dashboard.panels import PANELS

    required = [n for n in base.Panel.__annotations__] + ["needs", "figure"]
    everything = {schema.SCALAR: [], schema.LAYER: []}
    for panel in PANELS:
        for name in required:
            assert hasattr(panel, name), f"{panel.__name__} lacks {name}"
        for typo in ("RERENDER", "RERENDERON", "ALWAYS_SHOW", "INSTRUMENT", "LOAD_EXTRA"):
            assert not hasattr(panel, typo), f"{panel.__name__}.{typo}: a misspelt hook"
        options = tuple(v for v, _ in panel.OPTIONS)
        for need in panel.needs(everything, options):
            assert any(fnmatch.fnmatchcase(need.key, p) for p in panel.REQUIRES), (
                f"{panel.__name__} reads {need.key!r}, not named in its REQUIRES")
        assert set(base.hook(panel, "RERENDER_ON")) <= {"last", "events", "status", "series"}


def test_one_connection_and_one_catalogue_read_per_run_and_refresh(catalog, monkeypatch):
    import sqlite3

    from instrument.store import reader

    connects, catalogue_reads = [], []
    real_connect = sqlite3.connect

    def counting_connect(*args, **kwargs):  # a spy: the real connection, counted
        conn = real_connect(*args, **kwargs)
        connects.append(args[0])
        conn.set_trace_callback(lambda sql: catalogue_reads.append(sql)
                                if "FROM series" in sql else None)
        return conn

    monkeypatch.setattr(reader.sqlite3, "connect", counting_connect)
    items = base.load(grad_norm, catalog, View(["a"]))
    assert items[0].error is None and Keys.GRAD_NORM in items[0].series
    assert len(connects) == 1 and len(catalogue_reads) == 1, (connects, catalogue_reads)


def test_a_layer_panels_search_box_reads_only_the_matching_layers(catalog):
    items = base.load(grad_norm, catalog, View(["a"], filter="^2\\."))
    ds = items[0].series[Keys.GRAD_NORM]
    assert list(ds.layers) == ["2.weight", "2.bias"]
    full = base.load(grad_norm, catalog, View(["a"]))[0].series[Keys.GRAD_NORM]
    cols = [list(full.layers).index(n) for n in ds.layers]
    np.testing.assert_array_equal(ds.mean, full.mean[:, cols])
    step, layers, values = items[0].bars[Keys.GRAD_NORM]
    assert layers == ["2.weight", "2.bias"]
    np.testing.assert_allclose(values, [stores.grad_norm(step, 2), stores.grad_norm(step, 3)],
                               rtol=1e-6)
    assert base.load(scalars, catalog, View(["a"], filter="^2\\."))[0].layer_filter == ""
