"""Training with every Cockpit instrument on, every step, is bit-identical to training without
avionics: parameters at every step, gradients, optimizer state, BatchNorm running statistics
and the RNG stream (dropout draws from it in both runs)."""

import pytest
import torch
from torch import nn

import instrument
from instrument.cockpit import SECONDARY, Preset
from instrument.store.schema import CockpitKeys as CK


def _model(bn_train):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3), nn.Linear(36, 6),
                      nn.ReLU(inplace=True), nn.Dropout(0.2), nn.Linear(6, 3))
    if not bn_train:
        m[1].eval()
    return m


def _train(tmp_path, bn_train, watched, steps=4):
    model = _model(bn_train)
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    monitor = None
    if watched:
        monitor = instrument.watch(model, opt, run=str(tmp_path / "run"), loss_fn=crit,
                                   strict=True, preset=Preset("full", extra=SECONDARY))
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(8, 2, 6, 6, generator=g), torch.randint(0, 3, (8,), generator=g))
            for _ in range(steps)]
    torch.manual_seed(123)  # dropout's stream
    trace = []
    for x, y in data:
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        if monitor is not None:
            monitor.log(loss=loss)
        trace.append(([p.detach().clone() for p in model.parameters()], grads,
                      [b.clone() for b in model.buffers()]))
    state = [{k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
             for s in opt.state.values()]
    rng = torch.get_rng_state()
    if monitor is not None:
        monitor.close()
    return trace, state, rng, monitor


@pytest.mark.parametrize("bn_train", [True, False], ids=["bn-train", "bn-eval"])
def test_full_preset_is_bit_identical(tmp_path, bn_train):
    plain = _train(tmp_path, bn_train, watched=False)
    watched = _train(tmp_path, bn_train, watched=True)
    for (p0, g0, b0), (p1, g1, b1) in zip(plain[0], watched[0]):
        assert all(torch.equal(a, b) for a, b in zip(p0, p1))
        assert all(torch.equal(a, b) for a, b in zip(g0, g1))
        assert all(torch.equal(a, b) for a, b in zip(b0, b1))  # BatchNorm running stats
    for s0, s1 in zip(plain[1], watched[1]):
        assert s0.keys() == s1.keys()
        assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert torch.equal(plain[2], watched[2])  # the RNG stream continues unchanged
    run = instrument.load(watched[3].run_dir)
    keys = set(run.keys())
    # everything was actually computed (a probe that silently did nothing proves nothing)
    assert {CK.HESS_MAX_EV, CK.total(CK.HESS_TRACE), CK.total(CK.TIC_DIAG), CK.GRAD_HIST_2D,
            CK.ALPHA, CK.total(CK.MEAN_GSNR)} <= keys
