"""``torch.compile``: watching a compiled model changes nothing in what dynamo compiles.

Each case trains the same model twice from the same seed, once compiled and plain and once
compiled and watched (``watch()`` before ``torch.compile``, after it, and with
``module.compile()``), and compares: dynamo's graph count (hooks that guard on Python state made
dynamo recompile every step until ``recompile_limit`` sent the model back to eager numerics),
losses and parameters (bit-identical), names (no ``_orig_mod.``), and what the run says about
module outputs hidden inside a compiled graph (an info event) or visible outside it
(activation statistics equal to brute force on the captured outputs).
"""

import math

import numpy as np
import pytest
import torch
import torch._dynamo
from torch import nn
from torch.nn import functional as F

import instrument
from instrument.compiled import COMPILED_UNOBSERVED
from instrument.store.schema import Keys
from tests.helpers import batches, layer_frame, mlp

pytestmark = pytest.mark.slow

STEPS = 12  # more than dynamo's recompile_limit (8): the old hooks recompiled every step


class TinyGPT(nn.Module):
    """One pre-norm transformer block, tied embeddings, the loss computed inside forward."""

    def __init__(self, vocab=32, d=16, heads=2, ctx=8):
        super().__init__()
        self.heads = heads
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.out = nn.Linear(4 * d, d)
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        q, k, v = self.qkv(self.ln1(x)).split(x.shape[-1], dim=2)
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, -1))
        x = x + self.out(self.act(self.fc(self.ln2(x))))
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def token_batches(n, vocab=32, batch=4, ctx=8):
    g = torch.Generator().manual_seed(3)
    return [(torch.randint(0, vocab, (batch, ctx), generator=g),
             torch.randint(0, vocab, (batch, ctx), generator=g)) for _ in range(n)]


def mlp_step(model, x, y):
    return F.cross_entropy(model(x), y)


def gpt_step(model, x, y):
    return model(x, y)


CASES = {
    "mlp": (lambda: mlp(), lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
            lambda: batches(STEPS), mlp_step),
    "gpt": (lambda: (torch.manual_seed(0), TinyGPT())[1],
            lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.1),
            lambda: token_batches(STEPS), gpt_step),
}


def train(case, how, run_dir=None):
    """Train ``case`` compiled ``how``; watched when ``run_dir`` is given. Returns the dynamo
    graph count, the losses, the final parameters and the monitor."""
    make_model, make_opt, make_data, step = CASES[case]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = make_model()
    opt = make_opt(model)
    mon = None

    def watch(m):
        return instrument.watch(m, opt, run=run_dir, strict=True, schedules={"*": 1})

    if run_dir and how == "watch, then torch.compile":
        mon = watch(model)
    if how == "module.compile()":
        model.compile()
        compiled = model
    else:
        compiled = torch.compile(model)
    if run_dir and how != "watch, then torch.compile":
        mon = watch(compiled)
    losses = []
    with torch._dynamo.config.patch(error_on_recompile=True):  # any recompilation raises
        for x, y in make_data():
            opt.zero_grad()
            loss = step(compiled, x, y)
            loss.backward()
            opt.step()
            if mon is not None:
                mon.log(loss=loss)
            losses.append(loss.detach().clone())
    if mon is not None:
        mon.close()
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return graphs, losses, [p.detach().clone() for p in model.parameters()], mon, grads


HOWS = ("watch, then torch.compile", "torch.compile, then watch", "module.compile()")


@pytest.mark.parametrize("case", sorted(CASES))
def test_watching_a_compiled_model_changes_nothing(run_dir, case):
    # the reference: the same model compiled and trained without avionics (module.compile()
    # compiles the same graph: dynamo's cache on Module._call_impl can make a second
    # module.compile() in one process run eagerly, so it is not the reference)
    graphs, losses, params, _, _ = train(case, "torch.compile, then watch")
    for how in HOWS:
        w_graphs, w_losses, w_params, mon, grads = train(case, how, f"{run_dir}-{len(how)}")
        # one graph for the whole model, as plain (dynamo's counter can read 0 for a model
        # compiled before in the process: a cache hit, not a missing compile)
        assert w_graphs <= max(graphs, 1), f"{how}: {w_graphs} graphs, plain {graphs}"
        assert all(torch.equal(a, b) for a, b in zip(losses, w_losses)), how
        assert all(torch.equal(a, b) for a, b in zip(params, w_params)), how

        run = instrument.load(mon.run_dir)
        assert run.meta["steps"] == STEPS
        names = set(run.layers(keys=[Keys.GRAD_NORM])["layer"])
        assert names == {n for n, _ in CASES[case][0]().named_parameters()}, how
        # every leaf module ran inside the graph: the run says what it could not see, and why
        events = run.events()
        hidden = events[events["code"] == COMPILED_UNOBSERVED]
        assert len(hidden) == 1, how
        evidence = hidden.iloc[0]["evidence"]
        leaves = [n for n, m in CASES[case][0]().named_modules() if not list(m.children())]
        assert sorted(evidence["modules"]) == sorted(leaves)
        assert {"activations", "nonfinite", "forward_order"} <= set(evidence["instruments"])
        assert run.layers(keys=[Keys.ACT_MEAN]).dropna().empty
        # the gradient norms are the compiled run's own (brute force on the last gradient)
        last = layer_frame(run, Keys.GRAD_NORM)[STEPS - 1]
        for name, g in grads.items():
            assert last[name] == pytest.approx(g.double().norm().item(), rel=1e-5), name


def test_partly_compiled_model_records_what_the_graph_exposes(run_dir):
    """Only the middle Linear is compiled: the modules around it are measured (brute force
    from their captured outputs), the compiled one is named in the info event."""
    def build():
        model = mlp(width=16)
        model[2] = torch.compile(model[2])
        return model

    def run(watched):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        model = build()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        captured = {}
        for i in (0, 1, 3, 4):  # the eager modules
            model[i].register_forward_hook(
                lambda m, a, out, n=str(i): captured.setdefault(n, []).append(out.detach()))
        mon = instrument.watch(model, opt, run=run_dir, strict=True,
                               schedules={"*": 1}) if watched else None
        for x, y in batches(STEPS):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if mon is not None:
                mon.log(loss=loss)
        if mon is not None:
            mon.close()
        return (torch._dynamo.utils.counters["stats"]["unique_graphs"],
                [p.detach().clone() for p in model.parameters()], captured, mon)

    graphs, params, _, _ = run(False)
    with torch._dynamo.config.patch(error_on_recompile=True):  # any recompilation raises
        w_graphs, w_params, captured, mon = run(True)
    assert w_graphs <= max(graphs, 1)
    assert all(torch.equal(a, b) for a, b in zip(params, w_params))
    loaded = instrument.load(mon.run_dir)
    assert set(loaded.layers(keys=[Keys.GRAD_NORM])["layer"]) == {
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"}
    mean, std = layer_frame(loaded, Keys.ACT_MEAN), layer_frame(loaded, Keys.ACT_STD)
    zero = layer_frame(loaded, Keys.ACT_ZERO_FRAC)
    for step in range(STEPS):
        for name, outs in captured.items():
            out = outs[step].double()
            assert mean[step][name] == pytest.approx(out.mean().item(), rel=1e-5, abs=1e-7)
            assert std[step][name] == pytest.approx(out.std().item(), rel=1e-4)
            assert zero[step][name] == pytest.approx((out == 0).double().mean().item())
        assert math.isnan(mean[step].get("2", np.nan))
    events = loaded.events()
    hidden = events[events["code"] == COMPILED_UNOBSERVED]
    assert len(hidden) == 1 and hidden.iloc[0]["evidence"]["modules"] == ["2"]


def test_default_schedules_with_a_loss_inside_the_compiled_model_do_not_recompile(run_dir):
    """Loss capture is on only on some steps by default; switching a torch function mode between
    steps would recompile the graph. A compiled model gets no capture, and the run says why."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    torch.manual_seed(0)
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    compiled_model = torch.compile(model)
    mon = instrument.watch(compiled_model, opt, run=run_dir, strict=True)  # default schedules
    with torch._dynamo.config.patch(error_on_recompile=True):  # any recompilation raises
        for x, y in token_batches(2 * STEPS):
            opt.zero_grad()
            loss = compiled_model(x, y)
            loss.backward()
            opt.step()
            mon.log(loss=loss)
    mon.close()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] <= 1
    events = instrument.load(mon.run_dir).events()
    off = events[events["code"] == "loss_not_captured"]
    assert len(off) == 1 and off.iloc[0]["evidence"] == {"reason": "torch.compile"}
