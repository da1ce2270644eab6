"""Gradient norms, weight norms, update norms, update/weight ratios and the measured effective
LR against a brute-force reference: the same training replayed without avionics, with clones of
every gradient and parameter before and after each step, reduced in float64 numpy."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import instrument
from instrument.store.schema import Keys
from tests.helpers import batches, layer_frame, mlp, scalar_frame, watch

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
    "sgd_dampening": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, dampening=0.3),
    "sgd_plain": lambda p: torch.optim.SGD(p, lr=0.05),
    "nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
}


def reference(model, make_opt, data):
    """Per step: {name: (||g||, max|g|, ||w_after||, ||w_after - w_before||)} in float64."""
    model = copy.deepcopy(model)
    opt = make_opt(model.parameters())
    crit = nn.CrossEntropyLoss()
    out = []
    for x, y in data:
        opt.zero_grad()
        crit(model(x), y).backward()
        before = {n: p.detach().clone().double() for n, p in model.named_parameters()}
        grads = {n: p.grad.detach().clone().double() for n, p in model.named_parameters()}
        opt.step()
        row = {}
        for n, p in model.named_parameters():
            w = p.detach().double()
            row[n] = (grads[n].norm().item(), grads[n].abs().max().item(), w.norm().item(),
                      (w - before[n]).norm().item())
        out.append(row)
    return out


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_param_instruments_match_bruteforce(run_dir, opt_name):
    model = mlp(seed=3)
    data = batches(6)
    ref = reference(model, OPTIMIZERS[opt_name], data)
    opt = OPTIMIZERS[opt_name](model.parameters())
    mon = watch(model, opt, run_dir)
    crit = nn.CrossEntropyLoss()
    for x, y in data:
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    mon.close()
    run = instrument.load(mon.run_dir)
    g = layer_frame(run, Keys.GRAD_NORM)
    w, u = layer_frame(run, Keys.WEIGHT_NORM), layer_frame(run, Keys.UPDATE_NORM)
    ratio, eff = layer_frame(run, Keys.UPDATE_RATIO), layer_frame(run, Keys.EFFECTIVE_LR)
    gtot = scalar_frame(run, Keys.GRAD_NORM_TOTAL)
    for step, row in enumerate(ref):
        for name, (rg, rgmax, rw, ru) in row.items():
            assert g[step][name] == pytest.approx(rg, rel=1e-5)
            assert w[step][name] == pytest.approx(rw, rel=1e-5)
            # the reference difference of float32 weights carries rounding of order
            # eps*|w|/|dw| ~ 1e-4 relative; the momentum-buffer path is exact arithmetic
            assert u[step][name] == pytest.approx(ru, rel=2e-4, abs=1e-9)
            assert ratio[step][name] == pytest.approx(ru / rw, rel=2e-4, abs=1e-9)
            assert eff[step][name] == pytest.approx(ru / rg, rel=2e-4, abs=1e-9)
        total = np.sqrt(sum(v[0] ** 2 for v in row.values()))
        assert gtot[step] == pytest.approx(total, rel=1e-6)
        upd_total = np.sqrt(sum(v[3] ** 2 for v in row.values()))
        w_total = np.sqrt(sum(v[2] ** 2 for v in row.values()))
        assert scalar_frame(run, Keys.UPDATE_RATIO_TOTAL)[step] == pytest.approx(
            upd_total / w_total, rel=2e-4)


def test_effective_lr_of_sgd_momentum_tends_to_lr_over_one_minus_mu(run_dir):
    """Constant gradient: ||dw||/||g|| goes lr, lr(1+mu), ... -> lr/(1-mu) (independent check)."""
    w = nn.Parameter(torch.zeros(50))
    c = torch.randn(50)
    model = nn.Module()
    model.w = w
    opt = torch.optim.SGD([w], lr=0.01, momentum=0.9)
    mon = instrument.watch(model, opt, run=run_dir, strict=True)
    for _ in range(200):
        opt.zero_grad()
        (w * c).sum().backward()
        opt.step()
    mon.close()
    eff = layer_frame(instrument.load(mon.run_dir), Keys.EFFECTIVE_LR)
    assert eff[0]["w"] == pytest.approx(0.01, rel=1e-5)
    assert eff[1]["w"] == pytest.approx(0.01 * 1.9, rel=1e-5)
    assert eff[199]["w"] == pytest.approx(0.1, rel=1e-4)


def test_frozen_and_unused_parameters(run_dir):
    model = mlp(seed=1)
    model[0].weight.requires_grad_(False)  # frozen
    extra = nn.Linear(3, 3)  # in the model, never used in forward: no gradient
    model.add_module("unused", extra)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                          momentum=0.9)
    mon = watch(model, opt, run_dir)
    crit = nn.CrossEntropyLoss()
    for x, y in batches(3):
        opt.zero_grad()
        crit(model[:5](x), y).backward()
        opt.step()
    mon.close()
    run = instrument.load(mon.run_dir)
    g, u = layer_frame(run, Keys.GRAD_NORM), layer_frame(run, Keys.UPDATE_NORM)
    w = layer_frame(run, Keys.WEIGHT_NORM)
    for step in range(3):
        assert np.isnan(g[step]["0.weight"]) and np.isnan(g[step]["unused.weight"])
        assert g[step]["0.bias"] > 0
        assert np.isnan(u[step]["0.weight"])  # not held by the optimizer
        assert np.isnan(u[step]["unused.weight"]) or u[step]["unused.weight"] == 0.0
        assert w[step]["0.weight"] == pytest.approx(model[0].weight.norm().item(), rel=1e-6)


def test_manual_step_without_optimizer(run_dir):
    model = mlp(seed=2)
    data = batches(4)
    ref_model = copy.deepcopy(model)
    mon = instrument.watch(model, None, run=run_dir, strict=True, schedules={"*": 1})
    crit = nn.CrossEntropyLoss()
    prev = [p.detach().clone() for p in ref_model.parameters()]
    expect = []
    for (x, y) in data:
        for m in (model, ref_model):
            m.zero_grad()
            crit(m(x), y).backward()
            with torch.no_grad():
                for p in m.parameters():
                    p -= 0.1 * p.grad
        mon.step()
        now = [p.detach().clone() for p in ref_model.parameters()]
        expect.append([(a - b).double().norm().item() for a, b in zip(now, prev)])
        prev = now
    mon.close()
    run = instrument.load(mon.run_dir)
    u = layer_frame(run, Keys.UPDATE_NORM)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(u) == [0, 1, 2, 3]
    assert all(np.isnan(u[0][n]) for n in names)  # no previous parameters yet
    for step in (1, 2, 3):
        for n, e in zip(names, expect[step]):
            assert u[step][n] == pytest.approx(e, rel=2e-4)
    with pytest.raises(RuntimeError, match="only for loops without a torch optimizer"):
        m2 = mlp()
        o2 = torch.optim.SGD(m2.parameters(), lr=0.1)
        with instrument.watch(m2, o2, run=run_dir + "b") as mon2:
            mon2.step()
