"""Activation checkpointing (torch.utils.checkpoint): a segment's forward recomputed inside
backward is not measured a second time (use_reentrant=False: every series equals the run without
checkpointing); with use_reentrant=True the checkpointed modules are visibly not recorded, and
one info event names them. Training is bit-identical with and without avionics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import instrument
from instrument.checkpointing import RECOMPUTED_UNOBSERVED
from instrument.store.schema import Keys
from tests.helpers import layer_frame, watch

BATCH, STEPS = 16, 4


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 12)
        self.norm = nn.LayerNorm(12)

    def forward(self, x):
        return self.norm(x + self.fc2(self.act(self.fc1(x))))


class Net(nn.Module):
    def __init__(self, mode):
        super().__init__()
        torch.manual_seed(0)
        self.mode = mode  # None (no checkpointing), "reentrant" or "nonreentrant"
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        for b in self.blocks:
            x = b(x) if self.mode is None else checkpoint(
                b, x, use_reentrant=self.mode == "reentrant")
        return self.head(x)


def _train(run_dir, mode, watched=True, outputs=None):
    model = Net(mode)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = watch(model, opt, run_dir) if watched else None
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(BATCH, 12, generator=g).requires_grad_(mode == "reentrant")
        y = torch.randint(0, 5, (BATCH,), generator=g)
        if outputs is not None:
            with torch.no_grad():  # the reference: block 0's fc1 output, outside any hook
                outputs.append(model.blocks[0].fc1(x))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if mon is not None:
            mon.log(loss=loss)
    if mon is not None:
        mon.close()
    return model, (instrument.load(run_dir) if watched else None)


def _series(run):
    keys = {k: "scalar" for k in run.keys("scalar")} | {k: "layer" for k in run.keys("layer")}
    out = {}
    for key, kind in keys.items():
        df = run.scalars(keys=[key]) if kind == "scalar" else run.layers(keys=[key])
        cols = ["step"] + (["layer"] if kind == "layer" else [])
        out[key] = df.sort_values(cols)[cols + ["value"]].reset_index(drop=True)
    return out


def test_nonreentrant_checkpointing_records_what_the_plain_run_records(tmp_path):
    fc1_out = []
    _, plain = _train(str(tmp_path / "plain"), None, outputs=fc1_out)
    _, ckpt = _train(str(tmp_path / "ckpt"), "nonreentrant")
    a, b = _series(plain), _series(ckpt)
    assert set(a) == set(b)
    for key in a:
        assert a[key]["step"].tolist() == b[key]["step"].tolist(), key
        assert a[key]["value"].to_numpy() == pytest.approx(b[key]["value"].to_numpy(),
                                                           rel=1e-5, abs=1e-7, nan_ok=True), key
    # brute force for one checkpointed module: its output, seen once per step, not twice
    obs = layer_frame(ckpt, "act/unit_observations")
    mean = layer_frame(ckpt, "act/mean")
    for step, out in enumerate(fc1_out):
        assert obs[step]["blocks.0.fc1"] == BATCH
        assert mean[step]["blocks.0.fc1"] == pytest.approx(out.mean().item(), rel=1e-5)
    assert not ckpt.events(codes=[RECOMPUTED_UNOBSERVED]).shape[0]


def test_reentrant_checkpointing_marks_the_checkpointed_modules_missing(tmp_path):
    _, plain = _train(str(tmp_path / "plain"), None)
    _, ckpt = _train(str(tmp_path / "ckpt"), "reentrant")
    mean = layer_frame(ckpt, "act/mean")
    for step in range(STEPS):
        assert math.isnan(mean[step].get("blocks.0.fc1", math.nan))  # not recorded ...
        assert not math.isnan(mean[step]["head"])  # ... unlike the module outside
    ev = ckpt.events(codes=[RECOMPUTED_UNOBSERVED])
    assert len(ev) == 1 and ev["severity"].iloc[0] == "info"
    names = ev["evidence"].iloc[0]["modules"]
    assert sorted(names) == sorted(f"blocks.{b}.{m}" for b in (0, 1)
                                   for m in ("fc1", "act", "fc2", "norm"))
    assert "activations" in ev["evidence"].iloc[0]["instruments"]
    # gradient statistics do not depend on the forward hooks
    want = layer_frame(plain, Keys.GRAD_NORM)
    got = layer_frame(ckpt, Keys.GRAD_NORM)
    for step in range(STEPS):
        for name, value in want[step].items():
            assert got[step][name] == pytest.approx(value, rel=1e-5), (step, name)


@pytest.mark.parametrize("mode", ["reentrant", "nonreentrant"])
def test_training_unchanged_under_checkpointing(tmp_path, mode):
    plain, _ = _train(str(tmp_path / "a"), mode, watched=False)
    watched, _ = _train(str(tmp_path / "b"), mode)
    for (name, p), (_, q) in zip(plain.named_parameters(), watched.named_parameters()):
        assert torch.equal(p, q), name
