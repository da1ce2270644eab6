"""Losses without a criterion module: the functional losses a step computes anywhere (in the
loop, inside ``forward``, inside an ``nn.CrossEntropyLoss`` called from ``forward``) reach the
criterion and logits instruments and the criterion rules; the capture is on only on the steps
that take losses and never changes training. References: torch's own functions in the test."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import instrument
from instrument.diagnosis.replay import diagnose
from instrument.store.schema import DKeys
from tests.helpers import scalar_frame

pytestmark = pytest.mark.slow  # real training runs per loss layout: in make test, not in make test-fast

V, T, B = 5, 3, 6


class InForward(nn.Module):
    """``logits, loss = model(x, y)`` with the loss computed by ``loss(logits, y)``."""

    def __init__(self, loss=None, seed=0, scale=1.0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(V, 8)
        self.head = nn.Linear(8, V)
        with torch.no_grad():
            self.head.weight.mul_(scale)
        self.loss = loss or (lambda z, y: F.cross_entropy(z.view(-1, V), y.view(-1),
                                                          ignore_index=-1))
        self.stack_depths: list = []

    def forward(self, x, y=None):
        self.stack_depths.append(torch._C._len_torch_function_stack())
        z = self.head(torch.tanh(self.emb(x)))
        return z if y is None else (z, self.loss(z, y))


def _tokens(n, seed=1, ignore=False):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randint(0, V, (B, T), generator=g)
        y = torch.randint(0, V, (B, T), generator=g)
        if ignore:
            y[:2, -1] = -1
        out.append((x, y))
    return out


def _run(run_dir, model, data, loop=None, **kw):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kw.setdefault("strict", True)
    mon = instrument.watch(model, opt, run=run_dir, **kw)
    outside = []
    for x, y in data:
        opt.zero_grad()
        loss = loop(model, x, y) if loop else model(x, y)[1]
        loss.backward()
        opt.step()
        outside.append(torch._C._len_torch_function_stack())
        mon.log(loss=loss)
    mon.close()
    assert torch._C._len_torch_function_stack() == 0
    return instrument.load(mon.run_dir), outside


def test_capture_is_on_only_on_the_steps_that_take_losses(run_dir):
    model = InForward()
    data = _tokens(7)
    run, outside = _run(run_dir, model, data, schedules={"*": None, "criterion": 3})
    assert model.stack_depths == [1, 0, 0, 1, 0, 0, 1]  # inside forward, while capturing
    assert outside == [0] * 7  # gone after every optimizer step
    got = scalar_frame(run, DKeys.CRIT_LOSS)
    assert sorted(got) == [0, 3, 6]
    ref = InForward()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step, (x, y) in enumerate(data):
        ref_opt.zero_grad()
        loss = F.cross_entropy(ref(x).reshape(-1, V), y.reshape(-1))
        if step in got:
            assert got[step] == pytest.approx(loss.item(), rel=1e-6)
        loss.backward()
        ref_opt.step()


def _criterion_reference(z, y, ignore_index=-100, classes_dim=1):
    lp = torch.log_softmax(z.double(), classes_dim)
    valid = y != ignore_index
    picked = lp.gather(classes_dim, torch.where(valid, y, 0).unsqueeze(classes_dim))
    return -(picked.squeeze(classes_dim)[valid]).mean(), valid


LOOPS = {
    # the loss computed inside forward on the (B*T, V) flattening, ignore_index=-1
    "in_forward": (None, None, -1),
    # a class-dimension layout (N, C, d1) in the loop
    "class_dim": (None, lambda m, x, y: F.cross_entropy(m(x).transpose(1, 2), y), -100),
    # an nn.CrossEntropyLoss module called inside forward (not given as loss_fn)
    "module_in_forward": (lambda z, y: nn.CrossEntropyLoss(ignore_index=-1)(
        z.reshape(-1, V), y.reshape(-1)), None, -1),
    # log_softmax + nll_loss with keyword arguments
    "nll_keywords": (None, lambda m, x, y: F.nll_loss(
        input=torch.log_softmax(m(x), -1).reshape(-1, V), target=y.reshape(-1),
        ignore_index=-1), -1),
}


@pytest.mark.parametrize("case", sorted(LOOPS))
def test_criterion_and_logits_of_captured_losses(run_dir, case):
    loss, loop, ignore = LOOPS[case]
    data = _tokens(3, ignore=True)
    if ignore == -100:
        data = [(x, y.clamp(min=0)) for x, y in data]
    model = InForward(loss=loss)
    run, _ = _run(run_dir, model, data, loop=loop, schedules={"*": None, "criterion": 1,
                                                              "logits": 1})
    got = {k: scalar_frame(run, k) for k in run.keys("scalar")}
    ref = InForward(loss=loss)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step, (x, y) in enumerate(data):
        z = ref(x)
        want, valid = _criterion_reference(z.reshape(-1, V), y.reshape(-1), ignore)
        assert got[DKeys.CRIT_LOSS][step] == pytest.approx(want.item(), rel=1e-5)
        assert got[DKeys.CRIT_CLASSES][step] == V
        assert got[DKeys.CRIT_TARGETS][step] == valid.sum().item()
        assert got[DKeys.CRIT_TARGET_MIN][step] == y.reshape(-1)[valid].min().item()
        assert got[DKeys.CRIT_TARGET_MAX][step] == y.reshape(-1)[valid].max().item()
        # the logits instrument reads the loss's input: log-probabilities for F.nll_loss
        nll = case == "nll_keywords"
        zd = (torch.log_softmax(z.detach(), -1) if nll else z.detach()).double()
        assert got[DKeys.CRIT_NLL][step] == (1.0 if nll else 0.0)
        assert got[DKeys.LOGIT_MIN][step] == pytest.approx(zd.min().item(), rel=1e-5)
        assert got[DKeys.LOGIT_MAX][step] == pytest.approx(zd.max().item(), rel=1e-5)
        assert got[DKeys.LOGIT_SUM_DEV][step] == pytest.approx(
            (zd.sum(-1) - 1).abs().max().item(), rel=1e-5)
        assert got[DKeys.LOGIT_LSE_DEV][step] == pytest.approx(
            torch.logsumexp(zd, -1).abs().max().item(), rel=1e-5, abs=1e-6)
        ref_opt.zero_grad()
        (loop(ref, x, y) if loop else ref(x, y)[1]).backward()
        ref_opt.step()


def test_label_smoothing_and_other_kinds(run_dir):
    """The criterion's loss is the call's own (label smoothing included); BCE and MSE calls in
    the same step are not mixed into the classifier's series."""
    data = _tokens(2)

    def loop(m, x, y):
        z = m(x)
        ce = F.cross_entropy(z.reshape(-1, V), y.reshape(-1), label_smoothing=0.2)
        bce = F.binary_cross_entropy_with_logits(z[..., 0], (y > 2).float())
        return ce + bce + F.mse_loss(z[..., 1], y.float())

    model = InForward()
    run, _ = _run(run_dir, model, data, loop=loop, schedules={"*": None, "criterion": 1})
    got = scalar_frame(run, DKeys.CRIT_LOSS)
    ref = InForward()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step, (x, y) in enumerate(data):
        z = ref(x).reshape(-1, V).double()
        lp = torch.log_softmax(z, -1)
        want = (0.8 * -lp.gather(1, y.reshape(-1, 1)).squeeze(1) - 0.2 * lp.mean(1)).mean()
        assert got[step] == pytest.approx(want.item(), rel=1e-5)
        ref_opt.zero_grad()
        loop(ref, x, y).backward()
        ref_opt.step()


@pytest.mark.parametrize("first", ["cross_entropy", "nll_loss"])
def test_a_step_mixing_cross_entropy_and_nll_records_its_first_kind_only(run_dir, first):
    """Both instruments record the calls of the step's first classifier kind (never an average
    of two different losses) and say which kind in criterion/nll."""
    data = _tokens(2)

    def losses_of(z, y):
        z, y = z.reshape(-1, V), y.reshape(-1)
        calls = {"cross_entropy": lambda: (F.cross_entropy(z * 2, y), z * 2),
                 "nll_loss": lambda: (F.nll_loss(torch.log_softmax(z, -1), y),
                                      torch.log_softmax(z, -1))}
        a = calls[first]()  # called first
        b = calls["nll_loss" if first == "cross_entropy" else "cross_entropy"]()
        return a, a[0] + b[0]

    def loop(m, x, y):
        return losses_of(m(x), y)[1]

    model = InForward()
    run, _ = _run(run_dir, model, data, loop=loop, schedules={"*": None, "criterion": 1,
                                                              "logits": 1})
    got = {k: scalar_frame(run, k) for k in run.keys("scalar")}
    ref = InForward()
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step, (x, y) in enumerate(data):
        (want, inp), total = losses_of(ref(x), y)
        assert got[DKeys.CRIT_NLL][step] == (1.0 if first == "nll_loss" else 0.0)
        assert got[DKeys.CRIT_LOSS][step] == pytest.approx(want.item(), rel=1e-5)
        assert got[DKeys.LOGIT_MIN][step] == pytest.approx(inp.min().item(), rel=1e-5)
        assert got[DKeys.LOGIT_MAX][step] == pytest.approx(inp.max().item(), rel=1e-5)
        ref_opt.zero_grad()
        total.backward()
        ref_opt.step()


NLL_INPUTS = {  # what the loss inside forward hands F.nll_loss: (input, finding or None)
    "log_softmax": (lambda z: torch.log_softmax(z, -1), None),
    "softmax": (lambda z: torch.softmax(z, -1), "probabilities, not log-probabilities"),
    "raw_logits": (lambda z: z, "log_softmax is missing"),
}


@pytest.mark.parametrize("case", sorted(NLL_INPUTS))
def test_captured_nll_loss_gets_the_probabilities_check(tmp_path, case):
    """The classic bug of MNIST-style code, F.nll_loss on softmax outputs (or on raw logits),
    computed inside forward without a criterion module: probabilities_into_loss names F.nll_loss,
    and initial_loss does not misread its (non-)log-loss as a trained model."""
    transform, expected = NLL_INPUTS[case]

    def loss(z, y):
        return F.nll_loss(transform(z).reshape(-1, V), y.reshape(-1))

    run, _ = _run(str(tmp_path / case), InForward(loss=loss), _tokens(5), strict=False)
    found = {f.code: f for f in diagnose(run).findings}
    assert "initial_loss" not in found
    if expected is None:
        assert "probabilities_into_loss" not in found, found
    else:
        f = found["probabilities_into_loss"]
        assert "F.nll_loss" in f.message and expected in f.message and f.severity == "warning"


BCE_INPUTS = {  # what a multi-label loss inside forward hands the BCE-with-logits loss
    "logits": (lambda z: z, False),
    "sigmoid": (torch.sigmoid, True),
    "sigmoid_module": (torch.sigmoid, True),  # an nn.BCEWithLogitsLoss called inside forward
}


@pytest.mark.parametrize("case", sorted(BCE_INPUTS))
def test_captured_bce_with_logits_on_sigmoid_outputs_is_found(tmp_path, case):
    """A sigmoid applied before F.binary_cross_entropy_with_logits (which applies its own):
    the input's range is recorded (brute force below) and probabilities_into_loss names it."""
    transform, expected = BCE_INPUTS[case]
    fn = (nn.BCEWithLogitsLoss() if case == "sigmoid_module"
          else F.binary_cross_entropy_with_logits)

    def loss(z, y):
        return fn(transform(z), (y > 2).float().unsqueeze(-1).expand_as(z))

    data = _tokens(5)
    run, _ = _run(str(tmp_path / case), InForward(loss=loss), data, strict=False)
    got = {k: scalar_frame(run, k) for k in (DKeys.BCE_INPUT_MIN, DKeys.BCE_INPUT_MAX)}
    ref = InForward(loss=loss)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    for step, (x, y) in enumerate(data):
        inp = transform(ref(x)).detach()
        assert got[DKeys.BCE_INPUT_MIN][step] == pytest.approx(inp.min().item(), rel=1e-6)
        assert got[DKeys.BCE_INPUT_MAX][step] == pytest.approx(inp.max().item(), rel=1e-6)
        ref_opt.zero_grad()
        ref(x, y)[1].backward()
        ref_opt.step()
    found = {f.code: f for f in diagnose(run).findings}
    if expected:
        f = found["probabilities_into_loss"]
        assert "F.binary_cross_entropy_with_logits" in f.message and "sigmoid" in f.message
    else:
        assert "probabilities_into_loss" not in found


@pytest.mark.parametrize("loss", ["mse", "hand_written"])
def test_steps_without_a_classifier_loss_say_so_once(run_dir, loss):
    def loop(m, x, y):
        z = m(x)
        if loss == "mse":
            return F.mse_loss(z[..., 0], y.float())
        return -torch.log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).mean()  # no F.* loss

    run, _ = _run(run_dir, InForward(), _tokens(3), loop=loop)
    assert DKeys.CRIT_LOSS not in run.keys() and DKeys.LOGIT_MIN not in run.keys()
    assert "loss" in run.keys()
    ev = run.events(["loss_not_captured"])
    assert len(ev) == 1 and int(ev["step"].iloc[0]) == 0 and ev["severity"].iloc[0] == "info"
    assert ("only F.mse_loss" if loss == "mse" else "none of F.cross_entropy") in \
        ev["message"].iloc[0]


def _codes(run):
    return {f.code for f in diagnose(run).findings}


@pytest.mark.slow
def test_initial_loss_fires_on_over_confident_logits_computed_in_forward(tmp_path):
    data = _tokens(3)
    healthy, _ = _run(str(tmp_path / "ok"), InForward(), data, strict=False)
    assert "initial_loss" not in _codes(healthy)
    seeded, _ = _run(str(tmp_path / "bad"), InForward(scale=200.0), data, strict=False)
    assert "initial_loss" in _codes(seeded)
    ev = seeded.events(["initial_loss"])
    assert len(ev) == 1 and int(ev["step"].iloc[0]) == 0  # live, in the store as well


@pytest.mark.slow
def test_loss_at_chance_fires_when_the_labels_carry_no_information(tmp_path):
    th = {"chance_min_step": 10, "chance_window": 10}
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, V, (B, T), generator=g)
    learnable = [(x, (x + 1) % V)] * 40  # one batch again: learnable (and repeated)
    noise = [(torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g))
             for _ in range(40)]

    def loop(m, xb, yb):
        return F.cross_entropy(m(xb).reshape(-1, V), yb.reshape(-1))

    kw = dict(loop=loop, strict=False, thresholds=th, schedules={"criterion": 1})
    healthy, _ = _run(str(tmp_path / "ok"), InForward(scale=0.1), learnable, **kw)
    assert "loss_at_chance" not in _codes(healthy)
    seeded, _ = _run(str(tmp_path / "bad"), InForward(scale=0.1), noise, **kw)
    losses = scalar_frame(seeded, DKeys.CRIT_LOSS)
    assert abs(losses[39] - math.log(V)) < 0.1 * math.log(V)
    assert "loss_at_chance" in _codes(seeded)
