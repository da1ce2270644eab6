"""Device reductions (instrument/tensorops.py) against torch, and complex parameters (the
weights of Fourier layers) end to end: gradient, weight and update norms and Adam's effective
learning rate equal brute-force values computed in the test's own loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import instrument
from instrument.store.schema import Keys
from instrument.tensorops import norms
from tests.helpers import layer_frame


@pytest.mark.parametrize("ord", [2.0, float("inf")])
def test_norms_of_complex_real_sparse_and_empty_tensors(ord):
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(4, 3, generator=g, dtype=torch.cfloat),
               torch.randn(5, generator=g, dtype=torch.cdouble).conj(),
               torch.randn(7, generator=g),
               torch.randn(3, 2, generator=g, dtype=torch.cfloat).to_sparse(),
               torch.zeros(0)]
    got = norms(tensors, ord)
    for t, n in zip(tensors, got):
        dense = t.to_dense() if t.is_sparse else t
        mod = dense.resolve_conj().abs().double()
        want = torch.linalg.vector_norm(mod, ord).item() if mod.numel() else 0.0
        assert n.item() == pytest.approx(want, rel=1e-6)


class Spectral(nn.Module):
    """A Fourier-layer-shaped model: complex weights applied to the input's spectrum."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.weight = nn.Parameter(torch.randn(9, 6, dtype=torch.cfloat) * 0.1)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        spec = torch.fft.rfft(x, dim=-1)  # [B, 9] complex
        return self.head(torch.fft.irfft(spec @ self.weight, n=6, dim=-1))


@pytest.mark.parametrize("opt_name", ["adam", "sgd_momentum"])
def test_complex_parameters_end_to_end(run_dir, opt_name):
    model = Spectral()
    opt = (torch.optim.Adam(model.parameters(), lr=1e-2) if opt_name == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules={"*": 1})
    g = torch.Generator().manual_seed(1)
    ref = {"grad": [], "weight": [], "update": [], "alr": []}
    for _ in range(4):
        x, y = torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        w = model.weight.detach().clone()
        ref["grad"].append(torch.linalg.vector_norm(model.weight.grad).item())
        opt.step()
        ref["weight"].append(torch.linalg.vector_norm(model.weight).item())
        ref["update"].append(torch.linalg.vector_norm(model.weight.detach() - w).item())
        if opt_name == "adam":
            st = opt.state[model.weight]
            c = 1 - 0.999 ** st["step"].item()
            v = torch.view_as_real(st["exp_avg_sq"]).reshape(-1)  # Adam's per-real-entry v
            ref["alr"].append(torch.quantile(1e-2 / ((v / c).sqrt() + 1e-8), 0.5).item())
    mon.close()
    run = instrument.load(mon.run_dir)
    series = {"grad": Keys.GRAD_NORM, "weight": Keys.WEIGHT_NORM, "update": Keys.UPDATE_NORM}
    if opt_name == "adam":
        series["alr"] = Keys.ADAPTIVE_LR_MEDIAN
    for name, key in series.items():
        got = layer_frame(run, key)
        for step, want in enumerate(ref[name]):
            assert got[step]["weight"] == pytest.approx(want, rel=1e-4), (name, step)
    assert not len(run.events(codes=["instrument_error"]))
