"""Right numbers on the loop shapes real training code uses: closures (SGD, LBFGS), optimizer
wrappers (accelerate), gradient clipping (the before-clip norm), gradient scalers, a criterion
shared by two watched models, and bad input. Every value is compared with a reference the test
computes in its own loop."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

import instrument
from instrument.store.schema import DKeys, Keys
from tests.helpers import batches, layer_frame, mlp, scalar_frame, watch

pytestmark = pytest.mark.slow  # real training loops per shape: in make test, not in make test-fast


def grad_norms(model):
    """Per-parameter gradient norms and their global norm, as the step will see them."""
    per = {n: float(p.grad.norm()) for n, p in model.named_parameters() if p.grad is not None}
    return per, math.sqrt(sum(v * v for v in per.values()))


def check_norms(run, ref):
    """``ref[step] = (per-parameter norms, total)`` against the recorded series."""
    layers = layer_frame(run, Keys.GRAD_NORM)
    totals = scalar_frame(run, Keys.GRAD_NORM_TOTAL)
    assert sorted(totals) == sorted(ref)
    for step, (per, total) in ref.items():
        assert totals[step] == pytest.approx(total, rel=1e-5)
        for name, value in per.items():
            assert layers[step][name] == pytest.approx(value, rel=1e-5, abs=1e-9), (step, name)


# ---- closures ----------------------------------------------------------------------------------
def closure_loop(model, opt, data, monitor=None, ref=None, clip=None):
    crit = nn.CrossEntropyLoss()
    for step, (x, y) in enumerate(data):
        def closure():
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if ref is not None and step not in ref:  # the first evaluation of this step
                ref[step] = grad_norms(model)
            return loss

        loss = opt.step(closure)
        if monitor is not None:
            monitor.log(loss=loss)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_closure_step_reads_the_gradient_the_closure_made(run_dir, clip):
    data = batches(6)
    plain = mlp()
    closure_loop(plain, torch.optim.SGD(plain.parameters(), lr=0.1, momentum=0.9), data)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref = {}
    with watch(model, opt, run_dir) as monitor:
        closure_loop(model, opt, data, monitor, ref, clip)
    run = instrument.load(run_dir)
    check_norms(run, ref)  # step 0 included: it has a gradient now
    assert run.meta["steps"] == len(data)
    if clip is None:
        for a, b in zip(plain.parameters(), model.parameters()):
            assert torch.equal(a, b)  # the wrapped closure changes nothing


def test_lbfgs_counts_the_first_closure_evaluation_only(run_dir):
    data = batches(4)
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    crit = nn.CrossEntropyLoss()
    ref, first_outputs, evaluations = {}, {}, []
    with watch(model, opt, run_dir) as monitor:
        for step, (x, y) in enumerate(data):
            def closure():
                opt.zero_grad()
                out = model(x)
                loss = crit(out, y)
                loss.backward()
                evaluations.append(step)
                if step not in ref:  # the evaluation before any parameter changed
                    ref[step] = grad_norms(model)
                    first_outputs[step] = out.detach()
                return loss

            monitor.log(loss=opt.step(closure))
    assert len(evaluations) > len(data)  # LBFGS did evaluate the closure again
    run = instrument.load(run_dir)
    check_norms(run, ref)
    # activations: the last layer's output statistics are those of the first evaluation only
    means = layer_frame(run, Keys.ACT_MEAN)
    obs = layer_frame(run, Keys.ACT_UNIT_OBSERVATIONS)
    last = sorted(means[0])[-1]
    for step, out in first_outputs.items():
        assert means[step][last] == pytest.approx(float(out.mean()), rel=1e-4, abs=1e-6)
        assert obs[step][last] == len(out)  # one forward's rows, not one per evaluation


# ---- clipping and the before-clip norm -----------------------------------------------------------
def clip_loop(model, opt, data, monitor, max_norm, accumulate=1, scaler=None):
    """Returns ``{step: clip_grad_norm_'s return}`` and ``{step: norms the step used}``."""
    crit = nn.CrossEntropyLoss()
    returned, used = {}, {}
    for step in range(len(data) // accumulate):
        opt.zero_grad()
        for x, y in data[step * accumulate:(step + 1) * accumulate]:
            loss = crit(model(x), y) / accumulate
            (scaler.scale(loss) if scaler else loss).backward()
            monitor.log(loss=loss.detach() * accumulate)
        if scaler:
            scaler.unscale_(opt)
        returned[step] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        used[step] = grad_norms(model)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
    return returned, used


def median_norm(make_opt, data, accumulate=1, scaler=None):
    """The median unclipped gradient norm of the same run: a clip value some steps cross."""
    model = mlp()
    opt = make_opt(model)
    returned, _ = clip_loop(model, opt, data, _Null(), math.inf, accumulate, scaler)
    return sorted(returned.values())[len(returned) // 2]


class _Null:
    """A stand-in for the monitor in reference runs (they record nothing)."""

    def log(self, **kw):
        pass


@pytest.mark.parametrize("accumulate", [1, 3])
def test_before_clip_norm_is_what_clip_grad_norm_returns(run_dir, accumulate):
    data = batches(8 * accumulate)

    def make_opt(model):
        return torch.optim.AdamW(model.parameters(), lr=0.05)

    clip = median_norm(make_opt, data, accumulate)  # some steps are clipped, others are not
    model = mlp()
    opt = make_opt(model)
    with watch(model, opt, run_dir) as monitor:
        returned, used = clip_loop(model, opt, data, monitor, clip, accumulate)
    run = instrument.load(run_dir)
    check_norms(run, used)  # grad_norm/* stay the norms of the gradient the step used
    before = scalar_frame(run, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP)
    clipped = {s for s, r in returned.items() if r > clip}
    assert clipped and clipped != set(returned), returned  # the scenario has both kinds
    assert set(before) == clipped  # recorded exactly where clipping changed the gradient
    for step in clipped:
        assert before[step] == pytest.approx(returned[step], rel=1e-5)


def test_no_clipping_records_no_before_clip_norm(run_dir):
    data = batches(6)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, run_dir) as monitor:
        returned, used = clip_loop(model, opt, data, monitor, max_norm=1e9)
    run = instrument.load(run_dir)
    check_norms(run, used)
    assert Keys.GRAD_NORM_TOTAL_BEFORE_CLIP not in run.keys("scalar")


def test_grad_scaler_before_clip_norm_is_unscaled(run_dir):
    data = batches(8)

    def make_opt(model):
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def make_scaler():
        return torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=2)

    clip = median_norm(make_opt, data, scaler=make_scaler())
    model = mlp()
    opt = make_opt(model)
    with watch(model, opt, run_dir) as monitor:
        returned, used = clip_loop(model, opt, data, monitor, clip, scaler=make_scaler())
    run = instrument.load(run_dir)
    check_norms(run, used)
    before = scalar_frame(run, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP)
    clipped = {s for s, r in returned.items() if r > clip}
    assert clipped and clipped != set(returned) and set(before) == clipped
    for step in clipped:
        assert before[step] == pytest.approx(returned[step], rel=1e-5)


# ---- wrappers --------------------------------------------------------------------------------
def test_accelerate_prepared_optimizer_with_accumulation(run_dir):
    accelerate = pytest.importorskip("accelerate")
    accelerator = accelerate.Accelerator(gradient_accumulation_steps=2, cpu=True)
    data = batches(12)
    model = mlp()
    model, opt = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert not isinstance(opt, torch.optim.SGD)  # the wrapper, as users get it
    crit = nn.CrossEntropyLoss()
    used, returned, step = {}, {}, 0
    with watch(model, opt, run_dir) as monitor:
        for x, y in data:
            with accelerator.accumulate(model):
                loss = crit(model(x), y)
                accelerator.backward(loss)
                monitor.log(loss=loss.detach())
                if accelerator.sync_gradients:
                    returned[step] = float(accelerator.clip_grad_norm_(model.parameters(), 0.5))
                    used[step] = grad_norms(model)
                    step += 1
                opt.step()
                opt.zero_grad()
    run = instrument.load(run_dir)
    assert run.meta["steps"] == step == len(data) // 2
    check_norms(run, used)
    before = scalar_frame(run, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP)
    for s, r in returned.items():
        if r > 0.5:
            assert before[s] == pytest.approx(r, rel=1e-5)
        else:
            assert s not in before


class Wrapper:
    """A framework-style wrapper that exposes the torch optimizer as ``.optimizer``."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)


def test_nested_wrappers_attach_to_the_torch_optimizer(run_dir):
    data = batches(4)
    model = mlp()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = Wrapper(Wrapper(inner))
    assert instrument.unwrap_optimizer(opt) is inner
    ref = {}
    crit = nn.CrossEntropyLoss()
    with watch(model, opt, run_dir):
        for step, (x, y) in enumerate(data):
            opt.zero_grad()
            crit(model(x), y).backward()
            ref[step] = grad_norms(model)
            opt.step()
    check_norms(instrument.load(run_dir), ref)


# ---- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, words", [
    ("adam", ["str", "torch.optim.Optimizer", ".optimizer"]),
    (nn.Linear(2, 2), ["Linear", "torch.optim.Optimizer"]),
    (Wrapper(object()), ["object", "torch.optim.Optimizer"]),
])
def test_not_an_optimizer_is_a_clear_type_error_and_leaves_no_run(tmp_path, bad, words):
    run = tmp_path / "run"
    with pytest.raises(TypeError) as info:
        instrument.watch(mlp(), bad, run=str(run), strict=True)
    for word in words:
        assert word in str(info.value)
    assert not run.exists()


def test_lr_scheduler_is_named_as_such(tmp_path):
    model = mlp()
    sched = torch.optim.lr_scheduler.StepLR(torch.optim.SGD(model.parameters(), lr=0.1), 1)
    with pytest.raises(TypeError, match="learning-rate scheduler"):
        instrument.watch(model, sched, run=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


class NoHooksSGD(torch.optim.SGD):
    """An optimizer that refuses step hooks (some third-party optimizers do)."""

    def register_step_pre_hook(self, hook):
        raise NotImplementedError("this optimizer does not support step hooks")


def test_a_watch_that_fails_after_creating_the_run_leaves_nothing(tmp_path):
    model = mlp()
    run = tmp_path / "run"
    with pytest.raises(NotImplementedError, match="step hooks"):
        instrument.watch(model, NoHooksSGD(model.parameters(), lr=0.1), run=str(run),
                         strict=True)
    assert not run.exists()
    # a directory that existed before keeps everything but what watch() wrote
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(NotImplementedError):
        instrument.watch(model, NoHooksSGD(model.parameters(), lr=0.1), run=str(run),
                         strict=True)
    assert sorted(os.listdir(run)) == ["notes.txt"]


# ---- a criterion module shared by two watched models --------------------------------------------
def test_shared_criterion_does_not_advance_the_other_monitor(tmp_path):
    crit = nn.CrossEntropyLoss()
    a, b = mlp(0), mlp(1)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1)
    data = batches(5)
    with watch(a, opt_a, str(tmp_path / "a"), loss_fn=crit), \
            watch(b, opt_b, str(tmp_path / "b"), loss_fn=crit):
        for i, (x, y) in enumerate(data):
            for model, opt, every in ((a, opt_a, 1), (b, opt_b, 2)):
                if i % every:
                    continue
                opt.zero_grad()
                crit(model(x), y).backward()
                opt.step()
    assert instrument.load(str(tmp_path / "a")).meta["steps"] == 5
    assert instrument.load(str(tmp_path / "b")).meta["steps"] == 3
    crit_b = scalar_frame(instrument.load(str(tmp_path / "b")), "criterion/loss")
    assert sorted(crit_b) == [0, 1, 2]


def _unfreeze_loop(run_dir, how, steps=7, at=3):
    """Layer 0 frozen, then trained from step ``at``: added with add_param_group, or held by
    the optimizer from the start and switched to requires_grad=True. Returns the run and the
    brute-force update norms of layer 0's weight, per step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    for p in model[0].parameters():
        p.requires_grad_(False)
    params = model.parameters() if how == "requires_grad" else model[2].parameters()
    opt = torch.optim.Adam(params, lr=1e-2)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules={"*": 1})
    g = torch.Generator().manual_seed(1)
    updates = []
    for step in range(steps):
        if step == at:
            for p in model[0].parameters():
                p.requires_grad_(True)
            if how == "add_param_group":
                opt.add_param_group({"params": list(model[0].parameters()), "lr": 1e-3})
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        before = model[0].weight.detach().clone()
        opt.step()
        updates.append(torch.linalg.vector_norm(model[0].weight.detach() - before).item())
        mon.log(loss=torch.zeros(()))
    mon.close()
    return instrument.load(mon.run_dir), updates


@pytest.mark.parametrize("how", ["add_param_group", "requires_grad"])
def test_progressive_unfreezing_is_followed_from_that_step(run_dir, how):
    run, updates = _unfreeze_loop(run_dir, how)
    upd = layer_frame(run, Keys.UPDATE_NORM)
    stale = layer_frame(run, DKeys.GRAD_STALE)
    alr = layer_frame(run, Keys.ADAPTIVE_LR_MEDIAN)
    for step, want in enumerate(updates):
        if step < 3:  # frozen: not held (not recorded), or held and not moved (exactly 0)
            got = upd[step].get("0.weight", math.nan)
            assert want == 0.0 and (math.isnan(got) if how == "add_param_group" else got == 0)
            continue
        assert upd[step]["0.weight"] == pytest.approx(want, rel=1e-5), step
        assert math.isfinite(alr[step]["0.weight"]), step
        if step > 3:  # checked from the step after the first one with a gradient
            assert stale[step]["0.weight"] == 0.0, step
    ev = run.events(codes=["optimizer_changed"])
    assert ev["step"].tolist() == [3] and ev["severity"].iloc[0] == "info"


def test_parameters_added_after_watch_are_named_not_recorded(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir, strict=True)
    for step in range(3):
        if step == 1:
            model.append(nn.Linear(3, 3))  # a head built after watch()
            opt.add_param_group({"params": list(model[1].parameters())})
        opt.zero_grad()
        model(torch.randn(4, 6)).sum().backward()
        opt.step()
    mon.close()
    ev = instrument.load(mon.run_dir).events(codes=["optimizer_changed"])
    assert len(ev) == 1 and ev["step"].iloc[0] == 1
    assert "2 parameter(s) the model did not hold at watch() are not recorded" in \
        ev["message"].iloc[0]


def test_freezing_mid_run_is_not_reported_as_a_missing_gradient(tmp_path):
    """Layer 0 frozen (requires_grad=False) after 40 steps: no frozen_parameters finding, live
    or replayed, since the change is recorded; a layer cut from the graph by a detach() from
    the start (the reference pathology) is still found in the same run."""
    from instrument.diagnosis.replay import diagnose

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 3)

        def forward(self, x):
            h = torch.tanh(self.a(x))
            return self.head(h + 0 * self.b(h).detach())  # b never gets a gradient

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    mon = instrument.watch(model, opt, run=str(tmp_path / "run"), strict=True,
                           thresholds={"frozen_window": 20})
    w = torch.randn(8, 3, generator=torch.Generator().manual_seed(2))
    for step in range(120):
        if step == 40:
            for p in model.a.parameters():
                p.requires_grad_(False)
        x = torch.randn(16, 8)
        loss = nn.functional.cross_entropy(model(x), (x @ w).argmax(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.log(loss=loss)
    mon.close()
    run = instrument.load(mon.run_dir)
    live = run.events(codes=["frozen_parameters"])
    replayed = [f for f in diagnose(run).findings if f.code == "frozen_parameters"]
    for layers in (set(live["layer"]), {f.layer for f in replayed}):
        assert not any(str(name).startswith("a.") for name in layers), layers
        assert any(str(name).startswith("b.") for name in layers), layers
