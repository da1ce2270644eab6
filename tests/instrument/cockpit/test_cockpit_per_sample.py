"""Per-sample Cockpit quantities against a brute-force loop over samples: the three gradient
tests, GSNR, CABS, early stopping and the gradient histograms, per parameter and in total."""

import numpy as np
import pytest
import torch
from torch import nn

from instrument.cockpit import Preset
from instrument.store.schema import CockpitKeys as CK
from instrument.store.schema import HistogramBins
from tests.instrument.cockpit.cockpit_reference import (
    batches,
    binned,
    cabs,
    early_stopping,
    flat,
    individual_grads,
    individual_losses,
    inner_test,
    layer_at,
    mean_gsnr,
    norm_test,
    ortho_test,
    scalar_at,
    tiny_cnn,
    train,
)

PER_SAMPLE = ("norm_test", "inner_test", "ortho_test", "mean_gsnr", "cabs", "early_stopping",
              "grad_hist_1d", "grad_hist_2d")
RTOL = 2e-4  # float32 individual gradients vs float64 references, after a few steps


def _run(tmp_path, model, data, lr=0.05, opt=None, preset=None):
    crit = nn.CrossEntropyLoss()
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr)
    preset = preset or Preset(extra=PER_SAMPLE)
    run, records = train(model, opt, crit, data, tmp_path / "run", preset=preset)
    return run, records, crit


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    model = tiny_cnn()
    data = batches(3)
    run, records, crit = _run(tmp_path_factory.mktemp("cnn"), model, data)
    return run, records, crit, model, data


def test_gradient_tests_match_the_per_sample_loop(cnn_run):
    run, records, crit, model, data = cnn_run
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        for key, ref in ((CK.NORM_TEST, norm_test), (CK.INNER_TEST, inner_test),
                         (CK.ORTHO_TEST, ortho_test)):
            got = layer_at(run, key, step)
            assert set(got) == set(G), key
            for name in G:
                want = ref(G[name].reshape(len(x), -1))
                assert got[name] == pytest.approx(want, rel=RTOL), (key, step, name)
            assert scalar_at(run, CK.total(key), step) == pytest.approx(ref(flat(G)), rel=RTOL)


def test_gsnr_cabs_early_stopping_match_the_per_sample_loop(cnn_run):
    run, records, crit, model, data = cnn_run
    lr = 0.05
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        loss = individual_losses(model, records[step], crit, x, y).mean()
        for key, ref in ((CK.MEAN_GSNR, mean_gsnr), (CK.EARLY_STOPPING, early_stopping),
                         (CK.CABS, lambda g: cabs(g, lr, loss))):
            got = layer_at(run, key, step)
            for name in G:
                want = ref(G[name].reshape(len(x), -1))
                assert got[name] == pytest.approx(want, rel=1e-3, abs=1e-6), (key, name)
            total = ref(flat(G))
            assert scalar_at(run, CK.total(key), step) == pytest.approx(total, rel=1e-3)


def test_histograms_match_binning_every_individual_gradient(cnn_run):
    run, records, crit, model, data = cnn_run
    labels = run.layer_names(CK.GRAD_HIST_1D)
    assert labels == HistogramBins.labels_1d(-2, 2, 100)
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        total = np.zeros(100)
        for name, g in G.items():
            want = np.bincount(binned(g.reshape(-1), -2, 2, 100), minlength=100)
            got = layer_at(run, CK.hist_1d_of(name), step)
            assert [got[lb] for lb in labels] == list(want), name
            total += want
        got = layer_at(run, CK.GRAD_HIST_1D, step)
        assert [got[lb] for lb in labels] == list(total)
        # 2-D: (individual gradient, parameter value) pairs over all parameters
        want2 = np.zeros((40, 50))
        for name, g in G.items():
            gi = binned(g.reshape(-1), -1, 1, 40)
            pv = np.broadcast_to(records[step][name].numpy(), g.shape).reshape(-1)
            np.add.at(want2, (gi, binned(pv, -2, 2, 50)), 1)
        got2 = layer_at(run, CK.GRAD_HIST_2D, step)
        labels2 = run.layer_names(CK.GRAD_HIST_2D)
        assert np.array([got2[lb] for lb in labels2]).reshape(40, 50).tolist() == want2.tolist()


def test_narrow_histogram_bins_exercise_every_path(tmp_path):
    """Ranges narrower than the gradients: most Linear rows span several bins (expanded), the
    rest are counted per row; ReLU zeros land in the bin of 0."""
    model = tiny_cnn(seed=3)
    data = batches(2, seed=5, scale=3.0)
    preset = Preset(extra=("grad_hist_1d", "grad_hist_2d"), hist_1d_range=(-0.05, 0.03),
                    hist_1d_bins=16, hist_2d_bins=(7, 5), hist_2d_range=((-0.02, 0.02),
                                                                         (-0.3, 0.2)))
    run, records, crit = _run(tmp_path, model, data, preset=preset)
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        labels = run.layer_names(CK.GRAD_HIST_1D)
        for name, g in G.items():
            want = np.bincount(binned(g.reshape(-1), -0.05, 0.03, 16), minlength=16)
            got = layer_at(run, CK.hist_1d_of(name), step)
            assert [got[lb] for lb in labels] == list(want), name
        want2 = np.zeros((7, 5))
        for name, g in G.items():
            pv = np.broadcast_to(records[step][name].numpy(), g.shape).reshape(-1)
            np.add.at(want2, (binned(g.reshape(-1), -0.02, 0.02, 7),
                              binned(pv, -0.3, 0.2, 5)), 1)
        got2 = layer_at(run, CK.GRAD_HIST_2D, step)
        labels2 = run.layer_names(CK.GRAD_HIST_2D)
        assert np.array([got2[lb] for lb in labels2]).reshape(7, 5).tolist() == want2.tolist()


def _check_tests(run, records, crit, model, data, rel=RTOL):
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        got = layer_at(run, CK.NORM_TEST, step)
        for name in G:
            assert got[name] == pytest.approx(norm_test(G[name].reshape(len(x), -1)), rel=rel)
        assert scalar_at(run, CK.total(CK.INNER_TEST), step) == pytest.approx(
            inner_test(flat(G)), rel=rel)
        h = layer_at(run, CK.hist_1d_of(next(iter(G))), step)
        assert sum(h.values()) == G[next(iter(G))].size


@pytest.mark.parametrize("conv", [
    nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1),
    nn.Conv2d(2, 4, (3, 2), padding="same", dilation=2),
    nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
    nn.Conv2d(2, 4, 3, padding=1, groups=2),
    nn.Conv2d(2, 4, 3, padding="valid", bias=False),
])
def test_convolution_variants(tmp_path, conv):
    torch.manual_seed(0)
    conv.reset_parameters()
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    model(torch.randn(1, 2, 6, 6))  # materialize the lazy layer
    data = batches(2, B=6, classes=3)
    preset = Preset(extra=("norm_test", "inner_test", "grad_hist_1d"))
    run, records, crit = _run(tmp_path, model, data, preset=preset)
    _check_tests(run, records, crit, model, data)


def test_conv1d_conv3d_and_sequence_linear(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 3, 3, padding=1)
            self.c3 = nn.Conv3d(1, 2, 2)
            self.seq = nn.Linear(3, 4)  # applied to (B, T, 3): individual grads sum over T
            self.out = nn.Linear(4 * 6 + 2 * 8, 3)

        def forward(self, x):
            h = torch.relu(self.c1(x))  # (B, 3, 6)
            s = torch.tanh(self.seq(h.transpose(1, 2))).flatten(1)  # (B, 24)
            v = self.c3(x.reshape(-1, 1, 2, 2, 3)[:, :, :, :, :]).flatten(1)  # (B, 2*1*1*2)
            v = torch.cat([v, v, v, v], 1)
            return self.out(torch.cat([s, v], 1))

    torch.manual_seed(0)
    model = Net()
    g = torch.Generator().manual_seed(2)
    data = [(torch.randn(5, 2, 6, generator=g), torch.randint(0, 3, (5,), generator=g))
            for _ in range(2)]
    preset = Preset(extra=("norm_test", "inner_test", "grad_hist_1d"))
    run, records, crit = _run(tmp_path, model, data, preset=preset)
    _check_tests(run, records, crit, model, data)


def test_adam_and_sum_reduction(tmp_path):
    """The individual gradients are those of the criterion's own per-sample losses, whatever
    the optimizer or the loss reduction (sum: the loop's loss is B times the mean)."""
    model = tiny_cnn(seed=4)
    data = batches(2, seed=7)
    crit = nn.CrossEntropyLoss(reduction="sum")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    run, records = train(model, opt, crit, data, tmp_path / "r",
                         preset=Preset(extra=("norm_test", "ortho_test", "mean_gsnr")))
    mean_crit = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], mean_crit, x, y)
        assert scalar_at(run, CK.total(CK.NORM_TEST), step) == pytest.approx(
            norm_test(flat(G)), rel=RTOL)
        assert scalar_at(run, CK.total(CK.ORTHO_TEST), step) == pytest.approx(
            ortho_test(flat(G)), rel=RTOL)
        assert scalar_at(run, CK.total(CK.MEAN_GSNR), step) == pytest.approx(
            mean_gsnr(flat(G)), rel=1e-3)


def test_scaled_loss_and_mse(tmp_path):
    """A loop that scales the loss (here x 0.25, as under gradient accumulation) still gets the
    criterion's individual gradients; MSE works like any mean-reduced criterion."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
    crit = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(7, 4, generator=g), torch.randn(7, 2, generator=g)) for _ in range(2)]
    import instrument

    monitor = instrument.watch(model, opt, run=str(tmp_path / "r"), loss_fn=crit, strict=True,
                               preset=Preset(extra=("norm_test", "inner_test")))
    records = []
    for x, y in data:
        records.append({n: p.detach().clone() for n, p in model.named_parameters()})
        opt.zero_grad()
        (0.25 * crit(model(x), y)).backward()
        opt.step()
    monitor.close()
    run = instrument.load(monitor.run_dir)
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        got = layer_at(run, CK.NORM_TEST, step)
        for name in G:
            assert got[name] == pytest.approx(norm_test(G[name].reshape(7, -1)), rel=RTOL)
        assert scalar_at(run, CK.total(CK.INNER_TEST), step) == pytest.approx(
            inner_test(flat(G)), rel=RTOL)


def test_chunked_individual_gradients(tmp_path, monkeypatch):
    """Layers too large to materialize at once are processed in chunks of output channels."""
    from instrument.cockpit import constants

    monkeypatch.setattr(constants, "MATERIALIZE_MAX_ELEMENTS", 8 * 2 * 9)  # 2 channels a chunk
    model = tiny_cnn(seed=6)
    data = batches(2, seed=8)
    preset = Preset(extra=("norm_test", "inner_test", "ortho_test", "mean_gsnr",
                           "grad_hist_1d", "grad_hist_2d"))
    run, records, crit = _run(tmp_path, model, data, preset=preset)
    _check_tests(run, records, crit, model, data)
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        got = layer_at(run, CK.MEAN_GSNR, step)
        assert got["0.weight"] == pytest.approx(mean_gsnr(G["0.weight"].reshape(8, -1)),
                                                rel=1e-3)
        assert layer_at(run, CK.ORTHO_TEST, step)["0.weight"] == pytest.approx(
            ortho_test(G["0.weight"].reshape(8, -1)), rel=RTOL)
