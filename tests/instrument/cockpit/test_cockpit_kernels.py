"""The engines' building blocks on their own: both ways of building individual convolution
gradients, the diagonal-GGN layer kernel, Lanczos, and histogram edge cases."""

import numpy as np
import pytest
import torch
from torch import nn

from instrument.cockpit import ggn
from instrument.cockpit import histogram as H
from instrument.cockpit import kernels as K
from instrument.cockpit.lanczos import lanczos, ritz
from tests.instrument.cockpit.cockpit_reference import binned


def _per_sample_loop(module, a, delta):
    out = []
    for i in range(a.shape[0]):
        w = module.weight.detach().clone().requires_grad_(True)
        y = module._conv_forward(a[i: i + 1], w, None)
        (g,) = torch.autograd.grad(y, w, delta[i: i + 1])
        out.append(g.reshape(-1))
    return torch.stack(out)


@pytest.mark.parametrize("conv", [
    nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2),
    nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=(1, 0)),
    nn.Conv2d(4, 6, 3, padding=1, groups=2),
    nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"),
    nn.Conv3d(2, 3, 2, padding=1),
], ids=["1d", "2d-strided", "2d-groups", "2d-circular", "3d"])
@pytest.mark.parametrize("method", ["grouped", "unfold"])
def test_individual_conv_gradients_both_methods(conv, method):
    torch.manual_seed(0)
    shape = {1: (5, conv.in_channels, 9), 2: (5, conv.in_channels, 7, 6),
             3: (5, conv.in_channels, 4, 4, 3)}[conv.weight.dim() - 2]
    a = torch.randn(shape)
    out = conv(a)
    delta = torch.randn_like(out)
    tuner = K.Tuner()
    x, padding = K.conv_input(conv, a)
    if method == "unfold" and (conv.groups > 1 or x.dim() == 5):
        pytest.skip("unfold only serves 1-D/2-D convolutions without groups")
    key = (id(conv), tuple(delta.shape), tuple(x.shape))
    tuner.choice[key] = method
    got = tuner.conv_per_sample(conv, a, delta, 0, conv.out_channels).reshape(5, -1)
    torch.testing.assert_close(got, _per_sample_loop(conv, a, delta), rtol=1e-4, atol=1e-5)


def test_tuner_times_both_methods_once():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    a = torch.randn(4, 3, 8, 8)
    delta = torch.randn(4, 4, 8, 8)
    tuner = K.Tuner()
    first = tuner.conv_per_sample(conv, a, delta, 0, 4)
    assert list(tuner.choice.values())[0] in ("grouped", "unfold")
    torch.testing.assert_close(tuner.conv_per_sample(conv, a, delta, 0, 4), first)


def test_diag_ggn_layer_kernel_against_a_column_loop():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    a = torch.randn(4, 2, 5, 5)
    deltas = torch.randn(4, 6, 3, 5, 5)  # (B, columns, out...)
    dw, db = ggn.diag_ggn_layer(conv, a, deltas, K.Tuner())
    want_w = sum(_per_sample_loop(conv, a, deltas[:, r]).square().sum(0) for r in range(6))
    torch.testing.assert_close(dw.reshape(-1), want_w, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(db, deltas.sum((3, 4)).square().sum((0, 1)), rtol=1e-5,
                               atol=1e-6)
    grouped = nn.Conv2d(4, 6, 3, groups=2)
    a = torch.randn(3, 4, 5, 5)
    deltas = torch.randn(3, 2, 6, 3, 3)
    dw, _ = ggn.diag_ggn_layer(grouped, a, deltas, K.Tuner())
    want_w = sum(_per_sample_loop(grouped, a, deltas[:, r]).square().sum(0) for r in range(2))
    torch.testing.assert_close(dw.reshape(-1), want_w, rtol=1e-4, atol=1e-6)
    lin = nn.Linear(5, 3)
    for a in (torch.randn(4, 5), torch.randn(4, 2, 5)):  # plain and sequence inputs
        deltas = torch.randn(4, 2, *a.shape[1:-1], 3)
        dw, db = ggn.diag_ggn_layer(lin, a, deltas, K.Tuner())
        a3, d4 = a.reshape(4, -1, 5), deltas.reshape(4, 2, -1, 3)
        want = sum(torch.einsum("bto,btk->bok", d4[:, r], a3).square().sum(0) for r in range(2))
        torch.testing.assert_close(dw, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(db, d4.sum(2).square().sum((0, 1)), rtol=1e-5, atol=1e-6)


def test_loss_hessian_factors_of_cross_entropy():
    torch.manual_seed(0)
    z = torch.randn(3, 4, requires_grad=True)
    y = torch.tensor([0, 2, 3])
    loss = nn.functional.cross_entropy(z, y)
    S = ggn.loss_hessian_factors(loss, z, 3)  # (R, B, C)
    for i in range(3):
        p = z[i].detach().softmax(0)
        want = (torch.diag(p) - torch.outer(p, p)) / 3
        got = torch.einsum("rc,rd->cd", S[:, i], S[:, i])
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert S.shape[0] == 3  # the constant direction (zero eigenvalue) was dropped


def test_lanczos_finds_the_top_eigenvalue_and_warm_starts_help():
    torch.manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(60, 60, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 9.0, 7.5]), torch.linspace(-3, 5, 57)]).double()
    A = Q @ torch.diag(lam) @ Q.T
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(60, generator=gen, dtype=torch.float64)
    a, b, top = lanczos(lambda v: A @ v, start, 6, gen, tolerance=0)
    theta, res, _ = ritz(a.numpy(), b.numpy())
    assert theta <= 10 + 1e-9 and abs(theta - 10) <= res  # Bauer-Fike, top Ritz pair
    a2, b2, _ = lanczos(lambda v: A @ v, top, 6, gen, tolerance=0)
    theta2, res2, _ = ritz(a2.numpy(), b2.numpy())
    assert res2 < res and abs(theta2 - 10) < abs(theta - 10) + 1e-12
    a3, b3, _ = lanczos(lambda v: A @ v, start, 60, gen, tolerance=0)  # full space: exact
    assert ritz(a3.numpy(), b3.numpy())[0] == pytest.approx(10, rel=1e-10)


def test_lanczos_survives_an_invariant_start_vector():
    A = torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    start = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)  # an exact eigenvector
    a, b, top = lanczos(lambda v: A @ v, start, 4, gen)
    theta, res, _ = ritz(a.numpy(), b.numpy())
    assert theta == pytest.approx(3.0) and np.isfinite(a.numpy()).all()
    assert abs(abs(float(top[0])) - 1) < 1e-9


def test_histograms_skip_nan_and_clip_outliers():
    spec = H.HistSpec(-1, 1, 4)
    x = torch.tensor([[-5.0, -1.0, -0.5, 0.0, 0.49, 0.5, 0.99, 1.0, 7.0, float("nan")]])
    got = H.hist_1d(spec, x).tolist()
    want = np.bincount(binned([-5, -1, -0.5, 0, 0.49, 0.5, 0.99, 1, 7], -1, 1, 4),
                       minlength=4)
    assert got == want.tolist() == [2, 1, 2, 4]  # 9 finite values; NaN not counted


def test_outer_histograms_with_zero_rows_and_zero_gradients():
    torch.manual_seed(0)
    a = torch.relu(torch.randn(6, 9))
    a[2] = 0  # a sample whose whole input is zero
    delta = torch.randn(6, 4) * 0.3
    delta[:, 1] = 0  # a dead output unit
    w = torch.randn(4, 9)
    s, g, p = H.HistSpec(-0.4, 0.4, 8), H.HistSpec(-0.3, 0.3, 5), H.HistSpec(-1, 1, 3)
    prod = (delta[:, :, None] * a[:, None, :]).numpy()
    want1 = np.bincount(binned(prod.reshape(-1), -0.4, 0.4, 8), minlength=8)
    assert H.outer_hist_1d(s, delta, a).tolist() == want1.tolist()
    want2 = np.zeros((5, 3))
    np.add.at(want2, (binned(prod.reshape(-1), -0.3, 0.3, 5),
                      binned(np.broadcast_to(w.numpy(), prod.shape).reshape(-1), -1, 1, 3)), 1)
    assert H.outer_hist_2d(g, p, delta, a, w).tolist() == want2.tolist()
