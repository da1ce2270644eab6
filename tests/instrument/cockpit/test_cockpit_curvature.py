"""Curvature quantities against the dense Hessian (and Gauss-Newton matrix) of tiny models:
HessTrace, TICDiag, TICTrace, HessMaxEV with its convergence report, and both diagonal
engines (the GGN engine and BackPACK's DiagHessian)."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from instrument.cockpit import Preset
from instrument.cockpit import constants as C
from instrument.store import schema
from instrument.store.schema import CockpitKeys as CK
from tests.instrument.cockpit.cockpit_reference import (
    batches,
    dense_hessian,
    individual_grads,
    layer_at,
    scalar_at,
    split_diag,
    tiny_cnn,
    train,
)

CURV = ("hess_trace", "tic_diag", "tic_trace", "hess_max_ev")


@pytest.fixture(scope="module")
def relu_run(tmp_path_factory):
    model = tiny_cnn()
    data = batches(3)
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run, records = train(model, opt, crit, data, tmp_path_factory.mktemp("c") / "r",
                         preset=Preset(extra=CURV, lanczos_iterations=12))
    return run, records, crit, model, data


def test_hess_trace_and_tic_match_the_dense_hessian(relu_run):
    """For a ReLU/max-pool network the GGN diagonal is the Hessian diagonal."""
    run, records, crit, model, data = relu_run
    for step, (x, y) in enumerate(data):
        H, names, sizes = dense_hessian(model, records[step], crit, x, y)
        diag = split_diag(H, names, sizes)
        G = individual_grads(model, records[step], crit, x, y)
        trace = layer_at(run, CK.HESS_TRACE, step)
        tic = layer_at(run, CK.TIC_DIAG, step)
        tict = layer_at(run, CK.TIC_TRACE, step)
        M_all, h_all = [], []
        for n in names:
            h = diag[n]
            M = (G[n].reshape(len(x), -1) ** 2).mean(0)
            M_all.append(M)
            h_all.append(h)
            assert trace[n] == pytest.approx(h.sum(), rel=1e-4, abs=1e-7), n
            assert tic[n] == pytest.approx((M / (h + 1e-7)).sum(), rel=1e-3), n
            assert tict[n] == pytest.approx(M.sum() / (h.sum() + 1e-7), rel=1e-3), n
        M_all, h_all = np.concatenate(M_all), np.concatenate(h_all)
        assert scalar_at(run, CK.total(CK.HESS_TRACE), step) == pytest.approx(np.trace(H),
                                                                              rel=1e-4)
        assert scalar_at(run, CK.total(CK.TIC_DIAG), step) == pytest.approx(
            (M_all / (h_all + 1e-7)).sum(), rel=1e-3)
        assert scalar_at(run, CK.total(CK.TIC_TRACE), step) == pytest.approx(
            M_all.sum() / (h_all.sum() + 1e-7), rel=1e-3)


def test_hess_max_ev_and_its_convergence_report(relu_run):
    run, records, crit, model, data = relu_run
    for step, (x, y) in enumerate(data):
        H, _, _ = dense_hessian(model, records[step], crit, x, y)
        lam = np.linalg.eigvalsh(H)
        theta = scalar_at(run, CK.HESS_MAX_EV, step)
        rel_res = scalar_at(run, CK.HESS_MAX_EV_RESIDUAL, step)
        # Lanczos stops once its error bound is within the tolerance, or at the cap (12, 24
        # on the cold first step)
        n = scalar_at(run, CK.HESS_MAX_EV_ITERATIONS, step)
        bound = scalar_at(run, CK.HESS_MAX_EV_BOUND, step)
        assert n == (24 if step == 0 else 12) or (
            3 <= n < (24 if step == 0 else 12) and bound <= C.HESS_MAX_EV_TOLERANCE)
        # a Ritz value never exceeds the top eigenvalue, and some eigenvalue lies within the
        # residual of it (Bauer-Fike for symmetric matrices)
        assert theta <= lam[-1] * (1 + 1e-5)
        assert np.min(np.abs(lam - theta)) <= rel_res * abs(theta) * (1 + 1e-3) + 1e-6
        assert theta == pytest.approx(lam[-1], rel=1e-3)


def test_hess_max_ev_exact_with_enough_iterations_and_event_when_not(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))  # 38 parameters
    data = batches(2, B=6, shape=(3,), classes=3)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.SGD(model.parameters(), lr=0.1), crit, data,
                         tmp_path / "a", preset=Preset(extra=("hess_max_ev",),
                                                       lanczos_iterations=19))  # 38 cold
    for step, (x, y) in enumerate(data):
        H, _, _ = dense_hessian(model, records[step], crit, x, y)
        assert scalar_at(run, CK.HESS_MAX_EV, step) == pytest.approx(
            np.linalg.eigvalsh(H)[-1], rel=1e-4)
    assert run.events([schema.COCKPIT_NOT_CONVERGED]).empty
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3))
    run, _ = train(model, torch.optim.SGD(model.parameters(), lr=0.1), crit, data,
                   tmp_path / "b", preset=Preset(extra=("hess_max_ev",), lanczos_iterations=1))
    ev = run.events([schema.COCKPIT_NOT_CONVERGED])
    assert len(ev) >= 1 and "lanczos_iterations" in ev["message"].iloc[0]
    assert scalar_at(run, CK.HESS_MAX_EV_RESIDUAL, 0) > 0.1
    assert scalar_at(run, CK.HESS_MAX_EV_ITERATIONS, 1) == 1


def _dense_ggn_diag(model, params, crit, x, y):
    """diag(sum_i J_i^T H_i J_i) from explicit Jacobians and the loss Hessian."""
    names = list(params)
    sizes = [params[n].numel() for n in names]
    shapes = [params[n].shape for n in names]
    theta = torch.cat([params[n].reshape(-1) for n in names]).double()
    m64 = __import__("copy").deepcopy(model).double()

    def logits(t):
        p = {n: c.view(s) for n, c, s in zip(names, torch.split(t, sizes), shapes)}
        return functional_call(m64, p, (x.double(),))

    z = logits(theta).detach()
    J = torch.autograd.functional.jacobian(logits, theta)  # (B, C, D)
    Hz = torch.autograd.functional.hessian(lambda zz: crit(zz, y), z)  # (B, C, B, C)
    B, C = z.shape
    G = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64)
    for i in range(B):
        G += J[i].T @ Hz[i, :, i, :] @ J[i]
    return split_diag(G.numpy(), names, sizes)


def test_ggn_diagonal_of_a_smooth_network(tmp_path):
    """tanh makes the Hessian differ from the GGN; the default engine computes the GGN."""
    model = tiny_cnn(seed=2, act=nn.Tanh)
    data = batches(1, seed=3)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.SGD(model.parameters(), lr=0.1), crit, data,
                         tmp_path / "g", preset=Preset(extra=("hess_trace",)))
    x, y = data[0]
    ggn = _dense_ggn_diag(model, records[0], crit, x, y)
    H, names, sizes = dense_hessian(model, records[0], crit, x, y)
    hdiag = split_diag(H, names, sizes)
    trace = layer_at(run, CK.HESS_TRACE, 0)
    for n in names:
        assert trace[n] == pytest.approx(ggn[n].sum(), rel=1e-4, abs=1e-7)
    assert abs(sum(trace.values()) - np.trace(H)) > 1e-4 * abs(np.trace(H))  # GGN != H here
    assert sum(v.sum() for v in hdiag.values()) == pytest.approx(np.trace(H))


def test_backpack_diag_h_is_the_exact_hessian_diagonal(tmp_path):
    model = tiny_cnn(seed=2, act=nn.Tanh)
    data = batches(1, seed=3)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.SGD(model.parameters(), lr=0.1), crit, data,
                         tmp_path / "h", preset=Preset(extra=("hess_trace",),
                                                       curvature="diag_h"))
    x, y = data[0]
    H, names, sizes = dense_hessian(model, records[0], crit, x, y)
    diag = split_diag(H, names, sizes)
    trace = layer_at(run, CK.HESS_TRACE, 0)
    for n in names:
        assert trace[n] == pytest.approx(diag[n].sum(), rel=1e-4, abs=1e-7), n
    assert run.events([schema.COCKPIT_UNSUPPORTED]).empty


def test_backpack_diag_h_falls_back_with_a_note(tmp_path):
    """BackPACK has no DiagHessian rule for BatchNorm: the GGN engine takes over, noted."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    model[1].eval()
    data = batches(1, B=6, shape=(4,), classes=3)
    crit = nn.CrossEntropyLoss()
    run, records = train(model, torch.optim.SGD(model.parameters(), lr=0.1), crit, data,
                         tmp_path / "f", preset=Preset(extra=("hess_trace",),
                                                       curvature="diag_h"))
    msgs = " ".join(run.events([schema.COCKPIT_UNSUPPORTED])["message"])
    assert "DiagHessian failed" in msgs and "GGN diagonal instead" in msgs
    x, y = data[0]
    params = dict(records[0])
    H, names, sizes = dense_hessian(model, params, crit, x, y)
    diag = split_diag(H, names, sizes)
    trace = layer_at(run, CK.HESS_TRACE, 0)
    for n in ("0.weight", "0.bias", "3.weight", "3.bias"):  # ReLU + eval BN: GGN = H
        assert trace[n] == pytest.approx(diag[n].sum(), rel=1e-4, abs=1e-7), n
    assert "1.weight" not in trace  # BatchNorm's own parameters: not supported, noted


def test_the_probe_replays_the_step_exactly_dropout_and_batchnorm_included(tmp_path):
    """The replay reproduces the loop's loss bit for bit: same dropout masks (the RNG state
    captured at the forward), BatchNorm batch statistics, parameters before the update."""
    import instrument
    from instrument.cockpit.probe import CurvatureProbe

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Dropout(0.5), nn.Linear(48, 4))
    crit = nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=str(tmp_path / "r"), loss_fn=crit, strict=True,
                           preset=Preset(extra=("hess_max_ev",)))
    probe = mon.ctx.services[CurvatureProbe.KEY]
    for x, y in batches(3):
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        assert probe._result.loss.item() == loss.item()
    mon.close()
