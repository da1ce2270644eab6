"""Presets, per-instrument schedules and argument checking of the Cockpit instruments."""

import pytest
import torch
from torch import nn

import instrument
from instrument.cockpit import BUSINESS, ECONOMY, FULL, Preset
from instrument.store.schema import CockpitKeys as CK
from instrument.store.schema import HistogramBins
from tests.instrument.cockpit.cockpit_reference import batches, tiny_cnn, train


def _watch(tmp_path, **kw):
    model = tiny_cnn()
    return instrument.watch(model, torch.optim.SGD(model.parameters(), lr=0.1),
                            run=str(tmp_path / "r"), **kw)


def test_presets_mirror_cockpits_configurations():
    assert set(ECONOMY) == {"alpha", "distance", "grad_hist_1d", "grad_norm", "inner_test",
                            "norm_test", "ortho_test", "update"}
    assert set(BUSINESS) - set(ECONOMY) == {"tic_diag", "hess_trace"}
    assert set(FULL) - set(BUSINESS) == {"hess_max_ev", "grad_hist_2d"}


@pytest.mark.parametrize("kwargs, error, text", [
    ({"preset": "premium", "loss_fn": nn.CrossEntropyLoss()}, ValueError, "unknown preset"),
    ({"preset": 3}, TypeError, "preset must be"),
    ({"preset": "economy", "loss_fn": "cross_entropy"}, TypeError,
     "loss_fn must be the criterion the loop calls.*got str 'cross_entropy'"),
    ({"schedules": {"norm_test": 1}, "loss_fn": 3}, TypeError, "got int 3"),
    ({"schedules": {"hess_maxev": 1}}, ValueError, "unknown instrument name"),
])
def test_bad_arguments_say_how_to_fix_them(tmp_path, kwargs, error, text):
    with pytest.raises(error, match=text):
        _watch(tmp_path, **kwargs)


def test_preset_options_are_checked():
    with pytest.raises(ValueError, match="curvature"):
        Preset("full", curvature="kfac")
    with pytest.raises(ValueError, match="lanczos_iterations"):
        Preset("full", lanczos_iterations=0)
    with pytest.raises(ValueError, match="range"):
        Preset(hist_1d_range=(1, -1))
    with pytest.raises(ValueError, match="unknown instruments"):
        Preset(extra=("gsnr",))


def test_distance_needs_no_criterion_and_cockpit_is_off_by_default(tmp_path):
    mon = _watch(tmp_path / "a")
    assert not any(i.optional for i in mon.instruments)
    mon.close()
    mon = _watch(tmp_path / "b", schedules={"distance": 5})
    assert [i.name for i in mon.instruments if i.optional] == ["distance"]
    mon.close()


def test_each_instrument_has_its_own_schedule(tmp_path):
    model = tiny_cnn()
    run, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                   batches(5), tmp_path / "r", preset="business",
                   schedules={"norm_test": 2, "hess_trace": instrument.every(3, offset=1),
                              "grad_hist_1d": None})
    steps = lambda key: sorted(set(run.scalars([key])["step"]))  # noqa: E731
    assert steps(CK.total(CK.NORM_TEST)) == [0, 2, 4]
    assert steps(CK.total(CK.HESS_TRACE)) == [1, 4]
    assert steps(CK.total(CK.INNER_TEST)) == [0, 1, 2, 3, 4]
    assert sorted(set(run.layers([CK.ALPHA])["step"])) == [0, 1, 2, 3]
    assert CK.GRAD_HIST_1D not in run.keys()
    assert "grad_hist_1d" not in run.meta["instruments"]
    assert run.meta["settings"]["schedules"]["hess_trace"] == "every(3, offset=1)"
    assert run.meta["settings"]["schedules"]["alpha"].endswith("(and the step after each)")


def test_histogram_options_and_labels(tmp_path):
    model = tiny_cnn()
    run, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                   batches(1), tmp_path / "r",
                   preset=Preset(extra=("grad_hist_1d", "grad_hist_2d"), hist_1d_bins=10,
                                 hist_1d_range=(-1, 1), hist_2d_bins=(4, 3),
                                 hist_2d_range=((-0.5, 0.5), (-1, 2))))
    labels = run.layer_names(CK.GRAD_HIST_1D)
    assert HistogramBins.parse_1d(labels) == pytest.approx([-1 + 0.2 * i for i in range(10)])
    xs, ys = HistogramBins.parse_2d(run.layer_names(CK.GRAD_HIST_2D))
    assert xs == pytest.approx([-0.5, -0.25, 0, 0.25]) and ys == pytest.approx([-1, 0, 1])
    assert run.meta["cockpit"]["hist_2d_bins"] == [4, 3]


def test_cockpit_keys_are_reserved_for_log(tmp_path):
    mon = _watch(tmp_path)
    with pytest.raises(ValueError, match="records itself"):
        mon.log(**{"cockpit/alpha": 1.0})
    mon.log(alpha=0.5)  # a user's own "alpha" does not collide
    mon.close()
