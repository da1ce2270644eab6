"""The effective learning rate of adaptive optimizers, lr / (sqrt(v_hat) + eps), against a
reference computed from the optimizer state over every element with numpy percentiles."""

import numpy as np
import pytest
import torch
from torch import nn

import instrument
from instrument.instruments.adaptive_lr import SAMPLE_SIZE
from instrument.store.schema import Keys
from tests.helpers import batches, layer_frame, mlp, watch

CASES = {
    "adam": (lambda p: torch.optim.Adam(p, lr=3e-3, eps=1e-6), True),
    "adamw_amsgrad": (lambda p: torch.optim.AdamW(p, lr=3e-3, amsgrad=True), True),
    "rmsprop": (lambda p: torch.optim.RMSprop(p, lr=1e-3, eps=1e-6), False),
    "adagrad": (lambda p: torch.optim.Adagrad(p, lr=1e-2), False),
    # the denominator is sqrt(E[g^2] - E[g]^2); the lr decays with the step
    "rmsprop_centered": (lambda p: torch.optim.RMSprop(p, lr=1e-3, centered=True), False),
    "adagrad_lr_decay": (lambda p: torch.optim.Adagrad(p, lr=1e-2, lr_decay=0.5), False),
    # groups with their own lr, eps and beta2 (per-row hyperparameters), one lr a tensor
    "adamw_groups": (lambda p: torch.optim.AdamW(
        [{"params": p[:2], "lr": torch.tensor(2e-3), "eps": 1e-5, "betas": (0.9, 0.99)},
         {"params": p[2:], "lr": 5e-3, "weight_decay": 0.0}], lr=1e-3), True),
}


def reference_quantiles(opt, param, corrected):
    state = opt.state[param]
    group = next(g for g in opt.param_groups if any(p is param for p in g["params"]))
    if "exp_avg_sq" in state:
        v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    elif "square_avg" in state:
        v = state["square_avg"]
        if group["centered"]:
            v = v - state["grad_avg"] ** 2
    else:
        v = state["sum"]
    v = v.double().numpy().ravel()
    if corrected:
        v = v / (1 - group["betas"][1] ** float(state["step"]))
    lr = float(group["lr"]) / (1 + (float(state["step"]) - 1) * group.get("lr_decay", 0))
    lr_eff = lr / (np.sqrt(v) + group["eps"])
    return np.percentile(lr_eff, [10, 50, 90])


@pytest.mark.parametrize("case", list(CASES))
def test_adaptive_lr_matches_state(run_dir, case):
    make, corrected = CASES[case]
    model = mlp(seed=5)  # every tensor has fewer than SAMPLE_SIZE elements: exact percentiles
    assert all(p.numel() <= SAMPLE_SIZE for p in model.parameters())
    opt = make(list(model.parameters()))
    mon = watch(model, opt, run_dir)
    crit = nn.CrossEntropyLoss()
    expected = []
    for x, y in batches(4):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
        expected.append({n: reference_quantiles(opt, p, corrected)
                         for n, p in model.named_parameters()})
    mon.close()
    run = instrument.load(mon.run_dir)
    frames = [layer_frame(run, k) for k in (Keys.ADAPTIVE_LR_P10, Keys.ADAPTIVE_LR_MEDIAN,
                                            Keys.ADAPTIVE_LR_P90)]
    for step, row in enumerate(expected):
        for name, qs in row.items():
            for frame, q in zip(frames, qs):
                assert frame[step][name] == pytest.approx(q, rel=1e-4)


def test_large_tensors_are_summarized_from_a_sample(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
                          nn.Linear(200, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = watch(model, opt, run_dir)
    crit = nn.CrossEntropyLoss()
    for x, y in batches(3):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    mon.close()
    med = layer_frame(instrument.load(mon.run_dir), Keys.ADAPTIVE_LR_MEDIAN)[2]["2.weight"]
    state = opt.state[model[2].weight]
    v = state["exp_avg_sq"].double().numpy().ravel() / (1 - 0.999 ** float(state["step"]))
    lr_eff = 1e-3 / (np.sqrt(v) + 1e-8)
    # the estimated median sits near the 50th percentile of all 40,000 elements
    rank = (lr_eff <= med).mean()
    assert abs(rank - 0.5) < 4 / np.sqrt(SAMPLE_SIZE)


def test_no_adaptive_series_for_sgd(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, run_dir)
    x, y = batches(1)[0]
    nn.CrossEntropyLoss()(model(x), y).backward()
    opt.step()
    mon.close()
    assert Keys.ADAPTIVE_LR_MEDIAN not in instrument.load(mon.run_dir).keys()
