"""NaN/Inf origin: the first module in forward order whose output went non-finite, and the first
parameter whose gradient did, checked against the test's own hooks on an identical model."""

import copy

import pytest
import torch
from torch import nn

import instrument
from instrument.instruments.nonfinite import SAFE_TYPES
from tests.helpers import batches, watch


class NaNGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward (a backward-only fault)."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class BackwardFault(nn.Module):
    def __init__(self):
        super().__init__()
        self.active = False

    def forward(self, x):
        return NaNGrad.apply(x) if self.active else x


class ForwardFault(nn.Module):
    """Overflows to Inf (then NaN downstream) when active: like an exp() of a large input."""

    def __init__(self):
        super().__init__()
        self.active = False

    def forward(self, x):
        return torch.exp(x * 1e4) if self.active else x


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), ForwardFault(),
                         BackwardFault(), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def reference_origins(model, fault_at, fault_index, data):
    """Run an uninstrumented copy with the test's own hooks. Returns the first non-finite
    forward module and gradient (accumulation order) at the faulty step, the first step with a
    non-finite loss and the first step after which a parameter is non-finite."""
    model = copy.deepcopy(model)
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    fwd, grads = [], []
    for n, m in leaves:
        m.register_forward_hook(lambda mod, a, out, n=n: fwd.append(
            (n, not torch.isfinite(out).all().item())))
    for n, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, n=n: grads.append(
            (n, not torch.isfinite(p.grad).all().item())))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ref = {"loss": None, "parameter": None}
    for i, (x, y) in enumerate(data):
        model[fault_index].active = i == fault_at
        fwd.clear()
        grads.clear()
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        if i == fault_at:
            ref["activation"] = next((n for n, bad in fwd if bad), None)
            ref["gradient"] = next((n for n, bad in grads if bad), None)
        if ref["loss"] is None and not torch.isfinite(loss).item():
            ref["loss"] = i
        opt.step()
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all().item()]
        if ref["parameter"] is None and bad:
            ref["parameter"] = (i, bad[0])
    return ref


def run_with_fault(run_dir, fault_index, fault_at=3, steps=6):
    model = make_model()
    data = batches(steps)
    ref = reference_origins(model, fault_at, fault_index, data)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = watch(model, opt, run_dir, schedules={"*": 1})
    crit = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(data):
        model[fault_index].active = i == fault_at
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        mon.log(loss=loss)
    mon.close()
    ev = instrument.load(mon.run_dir).events(codes=["nonfinite"])
    by_tensor = {e["tensor"]: (int(s), layer) for e, s, layer in
                 zip(ev["evidence"], ev["step"], ev["layer"])}
    return ref, by_tensor, ev


def test_forward_nan_in_a_middle_layer(run_dir):
    ref, got, ev = run_with_fault(run_dir, fault_index=3)
    assert ref["activation"] == "3"
    assert got["activation"] == (3, ref["activation"])
    assert got["gradient"] == (3, ref["gradient"])
    # the update with NaN gradients poisons the parameters and, from the next step, the loss:
    # one event each, not one per step
    assert got["loss"][0] == ref["loss"]
    assert got["parameter"] == ref["parameter"]
    assert len(ev) == 4
    assert all(s == "critical" for s in ev["severity"]) and all(ev["suggestion"])


def test_backward_only_nan(run_dir):
    ref, got, ev = run_with_fault(run_dir, fault_index=4)
    # the forward pass at the faulty step is clean; it only goes non-finite at the next step,
    # after the NaN update reached the first layer's weights
    assert ref["activation"] is None and got["activation"] == (4, "0")
    assert ref["gradient"] in ("2.weight", "2.bias")  # upstream of the fault only
    assert got["gradient"] == (3, ref["gradient"])
    msg = ev[ev["layer"] == ref["gradient"]]["message"].item()
    assert "backward order" in msg


def test_events_recur_after_recovery(run_dir):
    """A transient NaN loss (e.g. one bad batch, step skipped) gives one event per episode."""
    model = nn.Sequential(nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = watch(model, opt, run_dir)
    for i in range(8):
        out = model(torch.randn(3, 4)).sum()
        mon.log(loss=out * (float("nan") if i in (2, 3, 6) else 1.0))
        opt.step()
    mon.close()
    ev = instrument.load(mon.run_dir).events(codes=["nonfinite"])
    assert ev["step"].tolist() == [2, 6]
    assert set(e["tensor"] for e in ev["evidence"]) == {"loss"}


def test_healthy_run_has_no_events(run_dir):
    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = watch(model, opt, run_dir)
    for x, y in batches(5):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(x), y)
        loss.backward()
        opt.step()
        mon.log(loss=loss)
    mon.close()
    assert instrument.load(mon.run_dir).events().empty


class MaskedAttention(nn.Module):
    """Attention whose functional code (masking, softmax) makes the NaN: a fully masked row
    softmaxes to NaN between the leaf modules ``k`` and ``proj``."""

    def __init__(self, dropout=False):
        super().__init__()
        self.q, self.k, self.proj = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.drop = nn.Dropout(0.0) if dropout else nn.Identity()  # unchecked (SAFE_TYPES)
        self.mask_all = False

    def forward(self, x):
        scores = self.q(x) @ self.k(x).T
        if self.mask_all:
            scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool), -float("inf"))
        return self.proj(self.drop(scores.softmax(-1)) @ x)


@pytest.mark.parametrize("dropout", [False, True])
def test_nan_made_by_functional_code_names_the_span_it_arose_in(run_dir, dropout):
    """The origin and the module before it are among the modules whose outputs are checked
    (elementwise-safe ones such as Dropout are not): a Dropout between softmax and proj is
    inside the span, never called "finite"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), MaskedAttention(dropout))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []  # the reference: the test's own hooks, (leaf, output finite?) in call order
    for name, m in model.named_modules():
        if not list(m.children()) and not isinstance(m, SAFE_TYPES):
            m.register_forward_hook(lambda mod, a, out, name=name: calls.append(
                (name, bool(torch.isfinite(out).all()))))
    mon = watch(model, opt, run_dir, schedules={"*": 1})
    for i, (x, y) in enumerate(batches(3)):
        model[1].mask_all = i == 1
        calls.clear()
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if i == 1:
            first = next(k for k, (_, ok) in enumerate(calls) if not ok)
            want_origin, want_previous = calls[first][0], calls[first - 1][0]
    mon.close()
    ev = instrument.load(mon.run_dir).events(codes=["nonfinite"])
    act = [(m, e) for m, e in zip(ev["message"], ev["evidence"]) if e["tensor"] == "activation"]
    assert len(act) == 1
    message, evidence = act[0]
    assert (want_origin, want_previous) == ("1.proj", "1.k")
    assert evidence["previous"] == want_previous
    assert f"first at module '{want_origin}'" in message
    assert f"The last module checked before it, '{want_previous}', had a finite output" in \
        message
    assert "(in '1')" in message
