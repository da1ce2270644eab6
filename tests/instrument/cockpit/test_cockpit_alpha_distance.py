"""Alpha (two consecutive steps, stored under the first) and Distance against references."""

import numpy as np
import pytest
import torch
from torch import nn

import instrument
from instrument.cockpit import Preset
from instrument.store.schema import CockpitKeys as CK
from tests.instrument.cockpit.cockpit_reference import (
    alpha_from_definition,
    batches,
    individual_grads,
    individual_losses,
    layer_at,
    scalar_at,
    tiny_cnn,
    train,
)


def _alpha_reference(model, crit, records, data, t):
    """alpha of the update t -> t+1 from per-sample losses and gradients at both points."""
    names = list(records[t])
    d = {n: (records[t + 1][n] - records[t][n]).double().numpy() for n in names}
    s = np.sqrt(sum((v ** 2).sum() for v in d.values()))
    obs = []
    for k in (t, t + 1):
        x, y = data[k]
        losses = individual_losses(model, records[k], crit, x, y)
        G = individual_grads(model, records[k], crit, x, y)
        proj = sum(G[n].reshape(len(x), -1) @ d[n].reshape(-1) for n in names) / s
        obs.append((losses.mean(), losses, proj))
    (f0, l0, p0), (f1, l1, p1) = obs
    return alpha_from_definition(f0, l0, p0, f1, l1, p1, s)


@pytest.mark.parametrize("make_opt", [
    lambda ps: torch.optim.SGD(ps, lr=0.3),
    lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3),
    lambda ps: torch.optim.Adam(ps, lr=0.05),
], ids=["sgd", "momentum", "adam"])
def test_alpha_matches_the_quadratic_fit_definition(tmp_path, make_opt):
    model = tiny_cnn(seed=1)
    data = batches(4, seed=2)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, make_opt(model.parameters()), crit, data, tmp_path / "r",
                         preset=Preset(extra=("alpha",)))
    got = run.layers([CK.ALPHA]).set_index("step")["value"]
    assert list(got.index) == [0, 1, 2]  # the last step has no successor
    for t in range(3):
        assert got[t] == pytest.approx(_alpha_reference(model, crit, records, data, t),
                                       rel=1e-3, abs=1e-4), t


def test_alpha_with_layers_too_large_to_keep(tmp_path, monkeypatch):
    """Layers whose individual gradients are not kept are projected by a forward pass with
    the update as weights."""
    from instrument.cockpit import constants

    monkeypatch.setattr(constants, "MATERIALIZE_MAX_ELEMENTS", 8 * 2 * 9)
    model = tiny_cnn(seed=1)
    data = batches(3, seed=2)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.SGD(model.parameters(), lr=0.3), crit, data,
                         tmp_path / "r", preset=Preset("economy"))
    got = run.layers([CK.ALPHA]).set_index("step")["value"]
    for t in range(2):
        assert got[t] == pytest.approx(_alpha_reference(model, crit, records, data, t),
                                       rel=1e-3, abs=1e-4), t


def test_alpha_on_a_sparse_schedule_and_the_wall_time_of_its_step(tmp_path):
    model = tiny_cnn(seed=1)
    data = batches(6, seed=2)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.SGD(model.parameters(), lr=0.2), crit, data,
                         tmp_path / "r", schedules={"alpha": 3})
    got = run.layers([CK.ALPHA])
    assert list(got["step"]) == [0, 3] and set(got["layer"]) == {CK.ALPHA_COLUMN}
    for t in (0, 3):
        assert float(got.set_index("step")["value"][t]) == pytest.approx(
            _alpha_reference(model, crit, records, data, t), rel=1e-3, abs=1e-4)
    # written one step late, without touching that step's other values
    loss = run.scalars(["loss"]).set_index("step")["value"]
    assert loss.index.tolist() == list(range(6)) and loss.notna().all()
    series = run.series(CK.ALPHA, kind="layer")
    assert list(series.step) == [0, 3]


def test_distance_from_the_parameters_at_watch_time(tmp_path):
    model = tiny_cnn(seed=5)
    data = batches(3, seed=6)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.Adam(model.parameters(), lr=0.05), crit, data,
                         tmp_path / "r", preset=Preset(extra=("distance",)))
    for step in range(3):
        got = layer_at(run, CK.DISTANCE, step)
        total = 0.0
        for n, p in records[step].items():
            want = float((p - records[0][n]).double().norm())
            total += want ** 2
            assert got[n] == pytest.approx(want, rel=1e-5, abs=1e-7)
        assert scalar_at(run, CK.total(CK.DISTANCE), step) == pytest.approx(np.sqrt(total),
                                                                            rel=1e-5, abs=1e-7)


def test_economy_preset_records_cockpit_configuration(tmp_path):
    model = tiny_cnn()
    data = batches(3)
    crit = nn.CrossEntropyLoss()
    run, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.1), crit, data,
                   tmp_path / "r", preset="economy")
    meta = run.meta
    assert meta["cockpit"]["name"] == "economy"
    assert {"alpha", "distance", "grad_hist_1d", "inner_test", "norm_test",
            "ortho_test"} <= set(meta["instruments"])
    assert "hess_trace" not in meta["instruments"]
    keys = set(run.keys())
    assert {CK.ALPHA, CK.total(CK.NORM_TEST), CK.total(CK.INNER_TEST), CK.total(CK.ORTHO_TEST),
            CK.DISTANCE, CK.GRAD_HIST_1D, "grad_norm", "update_norm", "loss"} <= keys
    assert not any(k.startswith(CK.HESS_TRACE) or k.startswith(CK.GRAD_HIST_2D) for k in keys)


def test_loop_without_optimizer_skips_alpha(tmp_path):
    """monitor.step() loops: alpha needs the optimizer's pre-step hook; the rest works, also
    for a model that is a single leaf module."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    crit = nn.MSELoss()
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    # the reference first: its forward passes must not run through the watched model
    G = individual_grads(model, {n: p.detach().clone() for n, p in model.named_parameters()},
                         crit, x, y)
    mon = instrument.watch(model, None, run=str(tmp_path / "r"), loss_fn=crit, strict=True,
                           preset="economy")
    assert "alpha" not in [i.name for i in mon.instruments]
    for _ in range(2):
        model.zero_grad()
        crit(model(x), y).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.1 * p.grad
        mon.step()
    mon.close()
    run = instrument.load(mon.run_dir)
    from tests.instrument.cockpit.cockpit_reference import flat, norm_test
    assert scalar_at(run, CK.total(CK.NORM_TEST), 0) == pytest.approx(norm_test(flat(G)),
                                                                      rel=2e-4)
