"""Activation statistics against brute force: the test captures every leaf module's outputs
with its own hooks and computes each statistic in float64 numpy over all calls of the step."""

import numpy as np
import pytest
import torch
from torch import nn

import instrument
from instrument.store.schema import Keys
from tests.helpers import layer_frame, watch

STATS = {Keys.ACT_MEAN, Keys.ACT_STD, Keys.ACT_MIN, Keys.ACT_MAX, Keys.ACT_ZERO_FRAC,
         Keys.ACT_DEAD_FRAC, Keys.ACT_UNIT_OBSERVATIONS, Keys.ACT_SATURATION_FRAC,
         Keys.ACT_NONFINITE}


def reference_stats(outputs, unit_dim, bounded):
    """``outputs``: the tensors one module produced in one step."""
    flat = np.concatenate([o.double().numpy().ravel() for o in outputs])
    moved = [np.moveaxis(o.double().numpy(), unit_dim, 0) for o in outputs]
    units = np.concatenate([m.reshape(m.shape[0], -1) for m in moved], axis=1)
    out = {
        Keys.ACT_MEAN: flat.mean(), Keys.ACT_STD: flat.std(ddof=1),
        Keys.ACT_MIN: flat.min(), Keys.ACT_MAX: flat.max(),
        Keys.ACT_ZERO_FRAC: (flat == 0).mean(),
        Keys.ACT_DEAD_FRAC: (np.abs(units).max(axis=1) == 0).mean(),
        Keys.ACT_UNIT_OBSERVATIONS: float(units.shape[1]),
        # calls whose output held a NaN or an Inf
        Keys.ACT_NONFINITE: float(sum(not np.isfinite(o.double().numpy()).all()
                                      for o in outputs)),
        Keys.ACT_SATURATION_FRAC: np.nan,
    }
    if bounded is not None:
        lo, hi = bounded
        out[Keys.ACT_SATURATION_FRAC] = (np.abs(2 * (flat - lo) / (hi - lo) - 1) > 0.97).mean()
    return out


def run_and_compare(run_dir, model, step_fn, n_steps, unit_dims, bounded=None, rel=1e-5):
    """Train ``n_steps`` with ``step_fn(model, opt)``; compare every module's stats per step."""
    bounded = bounded or {}
    captured = {}
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]

    def capture(name):
        def hook(mod, args, out):
            if torch.is_grad_enabled():
                captured.setdefault(name, []).append(out.detach().clone())
        return hook

    handles = [m.register_forward_hook(capture(n)) for n, m in leaves]
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = watch(model, opt, run_dir)
    expected = []
    for _ in range(n_steps):
        captured.clear()
        step_fn(model, opt)
        expected.append({n: reference_stats(outs, unit_dims[n], bounded.get(n))
                         for n, outs in captured.items()})
    mon.close()
    for h in handles:
        h.remove()
    run = instrument.load(mon.run_dir)
    frames = {k: layer_frame(run, k) for k in STATS}
    for step, row in enumerate(expected):
        for name, stats in row.items():
            for key, want in stats.items():
                got = frames[key][step][name]
                if np.isnan(want):
                    assert np.isnan(got), (step, name, key, got)
                else:
                    assert got == pytest.approx(want, rel=rel, abs=1e-6), (step, name, key)
    return run


def simple_step(make_batch, accumulate=1):
    crit = nn.CrossEntropyLoss()

    def step(model, opt):
        opt.zero_grad()
        for _ in range(accumulate):
            x, y = make_batch()
            crit(model(x).reshape(x.shape[0], -1)[:, :3], y).backward()
        opt.step()
    return step


def test_mlp_with_dead_and_saturated_units(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 3))
    with torch.no_grad():
        model[0].bias[:5] = -100.0  # five ReLU units that never fire: dead
        model[2].weight.mul_(20.0)  # drives tanh into saturation
    g = torch.Generator().manual_seed(1)
    batch = lambda: (torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g))
    units = {n: 1 for n in ("0", "1", "2", "3", "4", "5", "6")}
    run = run_and_compare(run_dir, model, simple_step(batch), 3, units,
                          bounded={"3": (-1.0, 1.0), "5": (0.0, 1.0)})
    dead = layer_frame(run, Keys.ACT_DEAD_FRAC)
    assert dead[0]["1"] == pytest.approx(5 / 16)  # sanity: the constructed dead units
    assert layer_frame(run, Keys.ACT_SATURATION_FRAC)[0]["3"] > 0.3


def test_cnn_channels_are_units(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():
        model[0].bias[2] = -1e3  # channel 2 is dead after the ReLU
    g = torch.Generator().manual_seed(2)
    batch = lambda: (torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g))
    units = {"0": 1, "1": 1, "2": 1, "3": 1, "4": 1, "5": 1, "6": 1}
    run = run_and_compare(run_dir, model, simple_step(batch), 2, units)
    assert layer_frame(run, Keys.ACT_DEAD_FRAC)[0]["1"] == pytest.approx(1 / 6)


def test_sequences_features_and_conv1d_channels(run_dir):
    """Linear on (N, T, F): units are features (last dim); Conv1d (N, C, L): channels, and the
    ReLU right after the Conv1d inherits channels."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(5, 6)
            self.act = nn.ReLU()
            self.conv = nn.Conv1d(6, 4, 3, padding=1)
            self.act2 = nn.ReLU()
            self.head = nn.Linear(4, 3)

        def forward(self, x):  # x: (N, T, 5)
            h = self.act(self.proj(x))
            h = self.act2(self.conv(h.transpose(1, 2)))
            return self.head(h.mean(-1))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.proj.bias[0] = -1e3
    g = torch.Generator().manual_seed(3)
    batch = lambda: (torch.randn(4, 7, 5, generator=g), torch.randint(0, 3, (4,), generator=g))
    units = {"proj": 2, "act": 2, "conv": 1, "act2": 1, "head": 1}
    run_and_compare(run_dir, model, simple_step(batch), 2, units)


def test_gradient_accumulation_combines_all_calls(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 3))
    with torch.no_grad():  # ReLU unit 0 fires only for the shifted micro-batch
        model[0].weight[0] = 1.0
        model[0].bias[0] = -50.0
        model[0].bias[1] = -1e3  # unit 1 never fires
    g = torch.Generator().manual_seed(4)
    state = {"i": 0}

    def batch():
        state["i"] += 1
        x = torch.randn(6, 8, generator=g) + (10.0 if state["i"] % 3 == 2 else 0.0)
        return x, torch.randint(0, 3, (6,), generator=g)

    units = {"0": 1, "1": 1, "2": 1}
    run = run_and_compare(run_dir, model, simple_step(batch, accumulate=3), 2, units)
    # zero in two of three micro-batches is not dead; zero in all three is
    assert layer_frame(run, Keys.ACT_DEAD_FRAC)[0]["1"] == pytest.approx(1 / 12)


def test_bf16_autocast_outputs(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(5)
    crit = nn.CrossEntropyLoss()

    def step(model, opt):
        opt.zero_grad()
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        crit(out.float(), y).backward()
        opt.step()

    run = run_and_compare(run_dir, model, step, 2, {"0": 1, "1": 1, "2": 1}, rel=1e-3)
    assert layer_frame(run, Keys.ACT_MEAN)[0]["0"] != 0


def test_nonfinite_counts(run_dir):
    class Poison(nn.Module):
        def forward(self, x):
            x = x.clone()
            x[0, :3] = float("nan")
            x[1, 0] = float("inf")
            return x

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 6), Poison(), nn.Linear(6, 3))
    g = torch.Generator().manual_seed(6)
    batch = lambda: (torch.randn(5, 8, generator=g), torch.randint(0, 3, (5,), generator=g))

    def step(model, opt):
        opt.zero_grad()
        x, y = batch()
        model(x)
        opt.step()  # no backward: gradients stay None, the step is still a step

    mon = watch(model, torch.optim.SGD(model.parameters(), lr=0.1), run_dir,
                schedules={"activations": 1})
    step(model, mon.ctx.optimizer)
    mon.close()
    nf = layer_frame(instrument.load(mon.run_dir), Keys.ACT_NONFINITE)[0]
    # one call each: the poisoned output and the Linear after it held NaN/Inf, the first did not
    assert nf["0"] == 0 and nf["1"] == 1 and nf["2"] == 1
