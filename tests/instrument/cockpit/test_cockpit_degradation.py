"""Unsupported layers degrade per layer with a note in the store; the other layers still
report correct values, and the run never crashes."""

import pytest
import torch
from torch import nn

import instrument
from instrument.cockpit import SECONDARY, Preset
from instrument.store import schema
from instrument.store.schema import CockpitKeys as CK
from tests.instrument.cockpit.cockpit_reference import (
    individual_grads,
    layer_at,
    norm_test,
    scalar_at,
)

ALL = Preset("full", extra=SECONDARY)


def _train(tmp_path, model, data, crit=None, preset=ALL, strict=True, loop=None):
    crit = crit or nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = instrument.watch(model, opt, run=str(tmp_path / "r"), loss_fn=crit, strict=strict,
                           preset=preset)
    records = []
    for x, y in data:
        records.append({n: p.detach().clone() for n, p in model.named_parameters()})
        opt.zero_grad()
        loss = loop(model, crit, x, y) if loop else crit(model(x), y)
        loss.backward()
        opt.step()
        mon.log(loss=loss)
    mon.close()
    return instrument.load(mon.run_dir), records, crit


def _notes(run):
    ev = run.events([schema.COCKPIT_UNSUPPORTED])
    return {(layer, msg) for layer, msg in zip(ev["layer"], ev["message"])}


def _data(n=2, B=6, shape=(4,), classes=3, seed=0, long_input=None):
    g = torch.Generator().manual_seed(seed)
    if long_input:
        return [(torch.randint(0, long_input, (B, *shape), generator=g),
                 torch.randint(0, classes, (B,), generator=g)) for _ in range(n)]
    return [(torch.randn(B, *shape, generator=g), torch.randint(0, classes, (B,), generator=g))
            for _ in range(n)]


def _check_layer(run, model, records, crit, data, names):
    for step, (x, y) in enumerate(data):
        G = individual_grads(model, records[step], crit, x, y)
        got = layer_at(run, CK.NORM_TEST, step)
        for n in names:
            assert got[n] == pytest.approx(norm_test(G[n].reshape(len(x), -1)), rel=2e-4), n


def test_batchnorm_in_train_mode_blocks_the_layers_before_it(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    data = _data()
    run, records, crit = _train(tmp_path, model, data)
    got = layer_at(run, CK.NORM_TEST, 0)
    assert set(got) == {"3.weight", "3.bias"}  # only the layer after the BatchNorm
    notes = _notes(run)
    assert any(layer == "0" and "before the BatchNorm '1' in train mode" in msg
               for layer, msg in notes)
    assert any(layer == "1" and "BatchNorm1d" in msg for layer, msg in notes)
    # the downstream layer is exact: BatchNorm's output is just its input there
    for step, (x, y) in enumerate(data):
        with torch.no_grad():
            p = records[step]
            h = torch.relu(torch.nn.functional.batch_norm(
                x @ p["0.weight"].T + p["0.bias"], None, None, p["1.weight"], p["1.bias"],
                training=True))
        head = nn.Linear(5, 3)
        G = individual_grads(head, {"weight": p["3.weight"], "bias": p["3.bias"]}, crit, h, y)
        assert layer_at(run, CK.NORM_TEST, step)["3.weight"] == pytest.approx(
            norm_test(G["weight"].reshape(len(x), -1)), rel=2e-4)
    # whole-model curvature still works: the probe replays BatchNorm in train mode
    assert scalar_at(run, CK.HESS_MAX_EV, 0) is not None
    assert set(layer_at(run, CK.HESS_TRACE, 0)) == {"3.weight", "3.bias"}


def test_layernorm_embedding_attention_and_custom_modules(tmp_path):
    class Scale(nn.Module):  # a custom module with its own parameter
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(8))

        def forward(self, x):
            return x * self.s

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.norm = nn.LayerNorm(8)
            self.scale = Scale()
            self.ff = nn.Linear(8, 8)
            self.head = nn.Linear(8 * 4, 3)

        def forward(self, tokens):
            h = self.emb(tokens)
            h = self.norm(h + self.attn(h, h, h, need_weights=False)[0])
            h = torch.relu(self.ff(self.scale(h)))
            return self.head(h.flatten(1))

    torch.manual_seed(0)
    model = Net()
    data = _data(shape=(4,), long_input=10)
    run, records, crit = _train(tmp_path, model, data)
    notes = _notes(run)
    for layer, kind in (("attn", "MultiheadAttention"), ("norm", "LayerNorm"),
                        ("scale", "Scale")):
        assert any(lay == layer and kind in msg and "not supported" in msg
                   for lay, msg in notes), layer
    assert not any(lay == "emb" for lay, _ in notes)  # embeddings are per-sample layers
    assert set(layer_at(run, CK.NORM_TEST, 0)) == {"emb.weight", "ff.weight", "ff.bias",
                                                    "head.weight", "head.bias"}
    _check_layer(run, model, records, crit, data, ["emb.weight", "ff.weight", "ff.bias",
                                                   "head.weight"])
    # curvature: supported layers get the diagonal; the Hessian's top eigenvalue is global
    assert set(layer_at(run, CK.HESS_TRACE, 0)) == {"emb.weight", "ff.weight", "ff.bias",
                                                     "head.weight", "head.bias"}
    assert scalar_at(run, CK.HESS_MAX_EV, 1) is not None
    assert layer_at(run, CK.ALPHA, 0)


def test_shared_weights_and_a_loss_outside_the_criterion(tmp_path):
    torch.manual_seed(0)
    shared = nn.Linear(4, 4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = shared
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            return self.out(torch.tanh(self.shared(torch.tanh(self.shared(x)))))

    model = Net()
    data = _data()
    run, records, crit = _train(tmp_path, model, data)
    assert any(layer == "shared" and "called 2 times" in msg for layer, msg in _notes(run))
    assert set(layer_at(run, CK.NORM_TEST, 0)) == {"out.weight", "out.bias"}
    _check_layer(run, model, records, crit, data, ["out.weight"])


def test_unusable_criteria_give_notes_not_crashes(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    data = _data()
    crit = nn.CrossEntropyLoss(reduction="none")
    run, _, _ = _train(tmp_path / "a", model, data, crit=crit,
                       loop=lambda m, c, x, y: c(m(x), y).mean())
    assert any("reduction='none'" in msg for _, msg in _notes(run))
    assert not any(k.startswith(CK.NORM_TEST) for k in run.keys())
    assert "loss" in run.keys()
    # the criterion gets a transformed model output: per-sample works, the probe cannot replay
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    run, records, crit = _train(tmp_path / "b", model, data,
                                loop=lambda m, c, x, y: c(m(x) / 2.0, y))
    assert any("cannot replay the loss" in msg for _, msg in _notes(run))
    assert CK.total(CK.NORM_TEST) in run.keys()
    assert CK.HESS_MAX_EV not in run.keys()


def test_non_strict_instrument_errors_disable_only_that_instrument(tmp_path, monkeypatch):
    """An internal error in one engine path is reported through the guard: the instrument is
    disabled with one warning, the others and the training continue."""
    from instrument.cockpit import kernels

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(kernels, "linear_rank_one", broken)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))
    with pytest.warns(Warning, match="boom"):
        run, _, _ = _train(tmp_path, model, _data(n=3), strict=False,
                           preset=Preset(extra=("norm_test", "hess_max_ev", "distance")))
    keys = set(run.keys())
    assert CK.HESS_MAX_EV in keys and CK.DISTANCE in keys  # untouched instruments go on
    assert not any(k.startswith(CK.NORM_TEST) for k in keys)
    ev = run.events([schema.INSTRUMENT_ERROR])
    assert "boom" in " ".join(ev["message"])


def test_an_op_without_double_backward_stops_only_hess_max_ev(tmp_path):
    """The fused CPU attention kernel, called directly, has no double backward."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x).view(-1, 1, 2, 4)  # (B, heads, tokens, dim)
            h = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(h, h, h)[0]
            return self.b(h.reshape(-1, 8))

    torch.manual_seed(0)
    model = Net()
    data = _data(n=3)
    run, records, crit = _train(tmp_path, model, data)
    assert any("Hessian-vector product cannot be formed" in msg for _, msg in _notes(run))
    assert CK.HESS_MAX_EV not in run.keys()
    # everything else still works, including the GGN diagonal (first derivatives only)
    assert {"a.weight", "b.weight"} <= set(layer_at(run, CK.HESS_TRACE, 2))
    _check_layer(run, model, records, crit, data, ["a.weight", "b.weight"])
