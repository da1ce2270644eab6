"""The zero_grad instrument: a stale gradient is flagged exactly in the loops that never clear it.

Each loop variant (from research/stack.md section 6) is run with watch(); the recorded
``grad_stale`` series is compared with the expected flags worked out by hand for that loop.
The instrument adds no tensor op at all (identity and version counters only).
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import instrument
from instrument.store.schema import DKeys
from tests.helpers import batches, layer_frame, mlp

ONLY = {"*": None, "zero_grad": 1}  # every other instrument off


def clear_before(variant, step, model, opt):
    """How (or whether) the variant clears gradients at the top of the step."""
    if variant in ("zero_grad", "clip", "probe") or (variant == "dropped_at_3" and step < 3):
        opt.zero_grad()
    elif variant == "zero_fill":
        opt.zero_grad(set_to_none=False)
    elif variant == "model_zero_grad":
        model.zero_grad()
    elif variant == "manual":
        for p in model.parameters():
            if p.grad is not None:
                p.grad.zero_()


def backward(variant, model, opt, x, y, crit):
    if variant == "zero_after_forward":
        out = model(x)
        opt.zero_grad()
        crit(out, y).backward()
    elif variant in ("accumulate", "accumulate_never_zeroed"):
        for xm, ym in zip(x.chunk(4), y.chunk(4)):
            (crit(model(xm), ym) / 4).backward()
    else:
        crit(model(x), y).backward()


def loop(variant, model, opt, data, mon=None):
    crit = nn.CrossEntropyLoss()
    params = list(model.parameters())
    for step, (x, y) in enumerate(data):
        clear_before(variant, step, model, opt)
        backward(variant, model, opt, x, y, crit)
        if variant in ("clip", "no_zero_grad_clip"):
            nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        if variant == "probe":  # a gradient probe between step and zero_grad accumulates nothing
            torch.autograd.grad(crit(model(x), y), params)
        if variant in ("step_then_zero", "accumulate"):
            opt.zero_grad()


CLEAN = ["zero_grad", "zero_fill", "model_zero_grad", "manual", "zero_after_forward",
         "step_then_zero", "accumulate", "clip", "probe"]
BUGGY = {"no_zero_grad": 1, "no_zero_grad_clip": 1, "accumulate_never_zeroed": 1,
         "dropped_at_3": 3}  # variant -> first stale step


@pytest.mark.parametrize("variant", CLEAN + list(BUGGY))
def test_stale_flags_per_loop(run_dir, variant):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules=ONLY)
    loop(variant, model, opt, batches(6), mon)
    mon.close()
    flags = layer_frame(instrument.load(mon.run_dir), DKeys.GRAD_STALE)
    names = [n for n, _ in model.named_parameters()]
    first = BUGGY.get(variant)
    for step in range(6):
        # the first accumulation after a step is seen from step 1 on (step 0 has no previous)
        want = np.nan if step == 0 else (1.0 if first is not None and step >= first else 0.0)
        got = [flags[step][n] for n in names]
        assert np.allclose(got, want, equal_nan=True), (variant, step, got)


def test_parameters_outside_the_optimizer_are_not_watched(run_dir):
    model = mlp()
    opt = torch.optim.SGD(list(model.parameters())[:2], lr=0.01)  # first layer only
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules=ONLY)
    loop("zero_grad", model, opt, batches(3), mon)
    mon.close()
    flags = layer_frame(instrument.load(mon.run_dir), DKeys.GRAD_STALE)
    assert flags[2]["0.weight"] == 0.0 and np.isnan(flags[2]["2.weight"])


@pytest.mark.parametrize("forget", [False, True])
def test_dcgan_loop_flags_only_what_the_step_uses(run_dir, forget):
    """The DCGAN loop: after the discriminator's step the generator's backward accumulates into
    the discriminator's leftover gradients, which netD.zero_grad() then clears before the
    discriminator's own backward. Reference, by value: a step's gradient is stale iff it
    differs from the gradient of the iteration's discriminator losses alone."""
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))
    disc = nn.Sequential(nn.Linear(6, 8), nn.LeakyReLU(0.2), nn.Linear(8, 1))
    opt_g = torch.optim.Adam(gen.parameters(), 1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), 1e-3)
    crit = nn.BCEWithLogitsLoss()
    mon = instrument.watch(disc, opt_d, run=run_dir, strict=True, schedules=ONLY)
    g = torch.Generator().manual_seed(1)
    params, want = list(disc.parameters()), []
    for step in range(5):
        real, z = torch.randn(8, 6, generator=g) + 1, torch.randn(8, 4, generator=g)
        if not forget or step == 0:
            disc.zero_grad()
        fake = gen(z)
        loss_d = crit(disc(real), torch.ones(8, 1)) + crit(disc(fake.detach()), torch.zeros(8, 1))
        fresh = torch.autograd.grad(loss_d, params, retain_graph=True)
        loss_d.backward()
        want.append(float(any(not torch.equal(p.grad, f) for p, f in zip(params, fresh))))
        opt_d.step()
        gen.zero_grad()
        crit(disc(fake), torch.ones(8, 1)).backward()  # fills disc's gradients too
        opt_g.step()
    mon.close()
    flags = layer_frame(instrument.load(mon.run_dir), DKeys.GRAD_STALE)
    assert want[1:] == [float(forget)] * 4  # the reference itself tells the two loops apart
    for step in range(1, 5):
        assert all(flags[step][n] == want[step] for n, _ in disc.named_parameters()), step
    assert np.isnan(flags[0]["0.weight"])


def test_a_cleared_gradient_the_step_does_not_touch_is_not_stale(run_dir):
    """A backward after the step fills every gradient; zero_grad() sets them to None; the next
    loss reaches only the first layer. The second layer's gradient is None at the step: not
    stale (its chain's tensor is gone, and None is not it)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules=ONLY)
    x = torch.randn(8, 4)
    used = []  # the reference: was the second layer's gradient at the step the leftover one?
    leftover = None
    for step in range(4):
        opt.zero_grad()
        (model(x) if step % 2 == 0 else model[0](x)).sum().backward()
        g = model[1].weight.grad
        used.append(g is not None and leftover is not None and torch.equal(g, leftover))
        opt.step()
        model(x).pow(2).sum().backward()  # after the step: fills every gradient
        leftover = model[1].weight.grad.clone()
    mon.close()
    flags = layer_frame(instrument.load(mon.run_dir), DKeys.GRAD_STALE)
    assert used == [False] * 4
    for step in range(1, 4):
        assert flags[step].get("1.weight", np.nan) != 1.0, step


class RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_reads_no_values(run_dir, monkeypatch):
    """Every hook of the instrument runs under a dispatch mode that records tensor ops: none."""
    from instrument.instruments.zero_grad import ZeroGrad

    rec = RecordOps()

    def recorded(fn):
        def wrapper(*args):
            with rec:
                return fn(*args)
        return wrapper

    for name in ("_before", "_accumulated"):
        make = getattr(ZeroGrad, name)
        monkeypatch.setattr(ZeroGrad, name,
                            lambda self, *a, make=make: recorded(make(self, *a)))
    stepped, pre_step = ZeroGrad._stepped, ZeroGrad.pre_step
    monkeypatch.setattr(ZeroGrad, "_stepped", lambda self, *a: recorded(stepped)(self, *a))
    monkeypatch.setattr(ZeroGrad, "pre_step", lambda self: recorded(pre_step)(self))
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules=ONLY)
    loop("no_zero_grad", model, opt, batches(4))
    mon.close()
    flags = layer_frame(instrument.load(mon.run_dir), DKeys.GRAD_STALE)
    assert flags[3]["0.weight"] == 1.0  # the wrapped hooks did run
    assert rec.ops == []
