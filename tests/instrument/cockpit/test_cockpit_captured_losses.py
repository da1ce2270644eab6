"""Cockpit's per-sample statistics with no ``loss_fn``: the loss is computed by a functional
call inside ``forward`` (nanoGPT-style), by an ``nn.CrossEntropyLoss`` called from ``forward``,
by Hugging Face's loss functions, or in the loop (BCE with logits, MSE). Each is compared with
individual gradients computed in the test (``torch.func``: ``vmap(grad)`` of each sample's own
share of the batch loss), and tied weights with their whole gradient."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

import instrument
from instrument.cockpit import Preset
from instrument.store.schema import CockpitKeys as CK
from tests.helpers import layer_frame
from tests.instrument.cockpit.cockpit_reference import (
    flat,
    inner_test,
    layer_at,
    mean_gsnr,
    norm_test,
    ortho_test,
    scalar_at,
)
from tests.instrument.tiny_gpt import GPT, Config, token_batches

RTOL = 2e-4
TESTS = ((CK.NORM_TEST, norm_test), (CK.INNER_TEST, inner_test), (CK.ORTHO_TEST, ortho_test))


def _train(tmp_path, model, data, loop, preset="economy", lr=0.05, loss_fn=None):
    """Train under watch() (no loss_fn unless given); the parameters each step started from."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    mon = instrument.watch(model, opt, run=str(tmp_path / "r"), strict=True, preset=preset,
                           loss_fn=loss_fn)
    records = []
    for x, y in data:
        records.append({n: p.detach().clone() for n, p in model.named_parameters()})
        opt.zero_grad()
        loss = loop(model, x, y)
        loss.backward()
        opt.step()
        mon.log(loss=loss)
    mon.close()
    return instrument.load(mon.run_dir), records


def vmap_grads(model, params, sample_loss, x, y):
    """``{name: (B, *shape) float64}``: per-sample gradients of ``sample_loss(model, params,
    x_i, y_i)`` (one sample, batch dimension of 1) by ``torch.func.vmap(grad(...))``."""
    g = vmap(grad(lambda p, xi, yi: sample_loss(model, p, xi[None], yi[None])),
             in_dims=(None, 0, 0))(params, x, y)
    return {n: v.double().numpy() for n, v in g.items()}


def _check_tests(run, G, step, names=None, rtol=None):
    B = next(iter(G.values())).shape[0]
    names = list(G) if names is None else names
    for key, ref in TESTS:
        got = layer_at(run, key, step)
        for name in names:
            tol = (rtol or {}).get(key, RTOL)
            assert got[name] == pytest.approx(ref(G[name].reshape(B, -1)), rel=tol), \
                (key, step, name)


# ---- nanoGPT-style: F.cross_entropy inside forward, tied weights, ignore_index -------------------
def _gpt_sample_loss(c, B, N):
    """Each sample's share of the batch's mean token loss: its summed token losses * B / N."""
    def loss(model, p, xi, yi, tie=True):
        z = functional_call(model, p, (xi,), tie_weights=tie)
        return F.cross_entropy(z.reshape(-1, c.vocab), yi.reshape(-1), ignore_index=-1,
                               reduction="sum") * B / N
    return loss


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    torch.manual_seed(0)
    c = Config()
    model = GPT(c)
    data = token_batches(2, 4, 5, c.vocab, seed=3, ignore_last=True)
    run, records = _train(tmp_path_factory.mktemp("gpt"), model, data,
                          lambda m, x, y: m(x, y)[1],
                          preset=Preset("economy", extra=("mean_gsnr",)))
    return run, records, model, data, c


def test_loss_inside_forward_gives_the_per_sample_statistics(gpt_run):
    run, records, model, data, c = gpt_run
    linear = [n for n, _ in model.named_parameters() if ".c_" in n]
    for step, (x, y) in enumerate(data):
        N = int((y != -1).sum())
        G = vmap_grads(model, records[step], _gpt_sample_loss(c, len(x), N), x, y)
        _check_tests(run, G, step, linear + ["transformer.wte.weight"])
        per_sample = set(linear) | {"transformer.wte.weight"}
        for key, ref in TESTS:  # totals over the parameters the engine treats
            assert scalar_at(run, CK.total(key), step) == pytest.approx(
                ref(flat(G, sorted(per_sample))), rel=RTOL)
        assert set(layer_at(run, CK.NORM_TEST, step)) == per_sample


def test_tied_weights_use_their_whole_gradient(gpt_run):
    run, records, model, data, c = gpt_run
    assert model.lm_head.weight is model.transformer.wte.weight
    names = {layer for key in (CK.NORM_TEST, "grad_norm") for layer in
             run.layers([key])["layer"]}
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names  # once, first name
    x, y = data[0]
    N = int((y != -1).sum())
    G = vmap_grads(model, records[0], _gpt_sample_loss(c, len(x), N), x, y)
    tied = G["transformer.wte.weight"].reshape(len(x), -1)
    got = layer_at(run, CK.NORM_TEST, 0)["transformer.wte.weight"]
    assert got == pytest.approx(norm_test(tied), rel=RTOL)
    # the head's share alone (what an engine treating modules one by one would see) is a
    # different number: the test can tell the two apart
    head = vmap(grad(lambda w, xi, yi: _gpt_sample_loss(c, len(x), N)(
        model, {**records[0], "lm_head.weight": w}, xi[None], yi[None], tie=False)),
        in_dims=(None, 0, 0))(records[0]["transformer.wte.weight"], x, y)
    assert abs(norm_test(head.double().numpy().reshape(len(x), -1)) - got) > 1e-3 * got
    gsnr = layer_at(run, CK.MEAN_GSNR, 0)["transformer.wte.weight"]
    assert gsnr == pytest.approx(mean_gsnr(tied), rel=1e-3)
    hist = run.layers([CK.hist_1d_of("transformer.wte.weight")], start=0, stop=0)
    assert hist["value"].sum() == tied.size
    # grad_norm: the norm of the whole .grad (both uses), as torch accumulates it
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            p.copy_(records[0][n])
    ref.zero_grad()
    ref(x, y)[1].backward()
    whole = ref.transformer.wte.weight.grad.double().norm().item()
    assert layer_frame(run, "grad_norm")[0]["transformer.wte.weight"] == pytest.approx(
        whole, rel=1e-5)


def ggn_traces(model, params, x, y, vocab):
    """Trace of the GGN diagonal per parameter, float64: ``diag(J^T H J)`` with ``J`` the dense
    Jacobian of all logits and ``H`` the Hessian of the mean token loss w.r.t. them."""
    m = copy.deepcopy(model).double()
    p = {n: v.double() for n, v in params.items()}
    jac = jacrev(lambda q: functional_call(m, q, (x,)))(p)
    z = functional_call(m, p, (x,)).detach()
    H = torch.autograd.functional.hessian(
        lambda zz: F.cross_entropy(zz.reshape(-1, vocab), y.reshape(-1)), z)
    H = H.reshape(z.numel(), z.numel())
    out = {}
    for n, J in jac.items():
        J = J.reshape(z.numel(), -1)
        out[n] = float(((H @ J) * J).sum())
    return out


def test_business_preset_curvature_on_a_tied_model(tmp_path):
    """The probe replays the loss captured inside forward; the tied parameter's GGN diagonal
    sums both uses (reference: J^T H J from the dense Jacobian in the test)."""
    torch.manual_seed(1)
    c = Config(vocab=7, block=4, layers=1, heads=1, embd=4)
    model = GPT(c)
    data = token_batches(1, 3, 4, c.vocab, seed=4)
    run, records = _train(tmp_path, model, data, lambda m, x, y: m(x, y)[1],
                          preset=Preset(extra=("hess_trace",)))
    x, y = data[0]
    want = ggn_traces(model, records[0], x, y, c.vocab)
    got = layer_at(run, CK.HESS_TRACE, 0)
    assert {"transformer.wte.weight", "transformer.h.0.mlp.c_fc.weight"} <= set(got)
    assert "lm_head.weight" not in got
    for name in got:
        assert got[name] == pytest.approx(want[name], rel=1e-4), name


# ---- an nn.CrossEntropyLoss module called inside forward, with label smoothing -----------------
class WithCriterion(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.body = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4))
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

    def forward(self, x, y=None):
        z = self.body(x)
        return z if y is None else (z, self.criterion(z, y))


@pytest.mark.parametrize("given", [False, True], ids=["captured", "loss_fn"])
def test_criterion_module_inside_forward_with_label_smoothing(tmp_path, given):
    """Captured (no loss_fn) or hooked (loss_fn=model.criterion): a criterion called inside
    forward, before the model's forward returns, defines the per-sample losses."""
    model = WithCriterion()
    g = torch.Generator().manual_seed(5)
    data = [(torch.randn(6, 6, generator=g), torch.randint(0, 4, (6,), generator=g))
            for _ in range(2)]
    run, records = _train(tmp_path, model, data, lambda m, x, y: m(x, y)[1],
                          loss_fn=model.criterion if given else None)

    def sample_loss(m, p, xi, yi):
        return F.cross_entropy(functional_call(m, p, (xi,)), yi, label_smoothing=0.1)

    for step, (x, y) in enumerate(data):
        _check_tests(run, vmap_grads(model, records[step], sample_loss, x, y), step)
    assert not any("did not reach" in m for m in run.events()["message"])


# ---- losses in the loop: BCE with logits (multi-label) and MSE (regression) -------------------
@pytest.mark.parametrize("kind", ["bce_with_logits", "mse"])
def test_bce_with_logits_and_mse_in_the_loop(tmp_path, kind):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    g = torch.Generator().manual_seed(6)
    data = [(torch.randn(8, 5, generator=g), (torch.rand(8, 3, generator=g) > 0.5).float())
            for _ in range(2)]
    fn = {"bce_with_logits": F.binary_cross_entropy_with_logits, "mse": F.mse_loss}[kind]
    run, records = _train(tmp_path, model, data, lambda m, x, y: fn(m(x), y))

    def sample_loss(m, p, xi, yi):  # the mean over elements: a sample's share is its mean
        return fn(functional_call(m, p, (xi,)), yi)

    for step, (x, y) in enumerate(data):
        _check_tests(run, vmap_grads(model, records[step], sample_loss, x, y), step)


# ---- Hugging Face models (from config, random init): their loss functions -------------------
def _loop_grads(model, params, sample_loss, x, y):
    """Per-sample gradients by one backward per sample (HF models under vmap are not needed)."""
    names = list(params)
    out = {n: [] for n in names}
    for i in range(len(x)):
        p = {n: params[n].clone().requires_grad_(True) for n in names}
        gs = torch.autograd.grad(sample_loss(model, p, x[i:i + 1], y[i:i + 1]),
                                 [p[n] for n in names], allow_unused=True)
        for n, gi in zip(names, gs):
            out[n].append(np.zeros(p[n].shape) if gi is None else gi.double().numpy())
    return {n: np.stack(v) for n, v in out.items()}


@pytest.mark.slow
def test_hugging_face_gpt2_and_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    gpt2 = transformers.GPT2LMHeadModel(cfg)
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight
    g = torch.Generator().manual_seed(7)
    data = [torch.randint(0, 11, (3, 5), generator=g) for _ in range(2)]
    data = [(x, x) for x in data]
    run, records = _train(tmp_path / "gpt2", gpt2, data,
                          lambda m, x, y: m(input_ids=x, labels=y).loss)
    N = 3 * 4  # shifted labels: T - 1 per sample

    def lm_loss(m, p, xi, yi):  # the causal-LM loss written out: predict token t + 1
        z = functional_call(m, p, (xi,)).logits
        return F.cross_entropy(z[:, :-1].reshape(-1, 11), yi[:, 1:].reshape(-1),
                               reduction="sum") * 3 / N

    for step, (x, y) in enumerate(data):
        G = _loop_grads(gpt2, records[step], lm_loss, x, y)
        _check_tests(run, G, step, ["transformer.wte.weight"])
    notes = " ".join(run.events(["cockpit_unsupported"])["message"])
    assert "Conv1D" in notes  # GPT-2's own layer type: visibly not recorded

    torch.manual_seed(0)
    bcfg = transformers.BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=8,
                                   max_position_embeddings=8, num_labels=3,
                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    bert = transformers.BertForSequenceClassification(bcfg)
    data = [(torch.randint(0, 13, (4, 5), generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(2)]
    run, records = _train(tmp_path / "bert", bert, data,
                          lambda m, x, y: m(input_ids=x, labels=y).loss)

    def cls_loss(m, p, xi, yi):
        return F.cross_entropy(functional_call(m, p, (xi,)).logits, yi)

    for step, (x, y) in enumerate(data):
        G = _loop_grads(bert, records[step], cls_loss, x, y)
        names = sorted(layer_at(run, CK.NORM_TEST, step))
        assert "classifier.weight" in names and "bert.embeddings.word_embeddings.weight" in names
        # BERT's 0.02-std init: the inner test is ~3e-3 here, a variance 1e-5 of the squared
        # mean inner product, which float32 sums resolve to about 1e-3 relative
        _check_tests(run, G, step, names, rtol={CK.INNER_TEST: 5e-3})
