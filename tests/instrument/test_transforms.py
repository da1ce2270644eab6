"""torch.func transforms: a differential-privacy-style step (per-sample gradients with
vmap(grad(...)) over functional_call, clipped and averaged into .grad by the loop) trains
bit-identically under avionics, and the gradient statistics are those of the .grad the loop
assigned (brute force in the test). Before, the monitor's hooks wrote into their buffer from
inside the transform, which functorch refuses: the user's step raised."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

import instrument
from instrument.store.schema import Keys
from tests.helpers import layer_frame

STEPS = 4


def _dp_train(run_dir=None):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = (instrument.watch(model, opt, run=run_dir, strict=True, schedules={"*": 1})
           if run_dir else None)

    def sample_loss(params, x, y):
        out = functional_call(model, params, (x.unsqueeze(0),))
        return nn.functional.cross_entropy(out, y.unsqueeze(0))

    g = torch.Generator().manual_seed(1)
    norms = []
    for _ in range(STEPS):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
        per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))(
            {k: p.detach() for k, p in model.named_parameters()}, x, y)
        for name, p in model.named_parameters():
            p.grad = per_sample[name].clamp(-0.5, 0.5).mean(0)  # clip, then average
        norms.append({n: torch.linalg.vector_norm(p.grad).item()
                      for n, p in model.named_parameters()})
        opt.step()
        opt.zero_grad()
    if mon is not None:
        mon.close()
    return model, norms, (mon.run_dir if mon else None)


def test_per_sample_gradients_with_vmap_train_unchanged_and_are_measured(tmp_path):
    plain, _, _ = _dp_train()
    watched, norms, run_dir = _dp_train(str(tmp_path / "run"))
    for (name, p), (_, q) in zip(plain.named_parameters(), watched.named_parameters()):
        assert torch.equal(p, q), name
    run = instrument.load(run_dir)
    assert run.meta["status"] == "finished" and run.meta["steps"] == STEPS
    got = layer_frame(run, Keys.GRAD_NORM)
    for step, want in enumerate(norms):
        for name, value in want.items():
            assert got[step][name] == pytest.approx(value, rel=1e-5), (step, name)
    assert not len(run.events(codes=["instrument_error"]))
    # the step's losses were all computed inside the transform: the note says why none was seen
    note = run.events(codes=["loss_not_captured"])
    assert len(note) == 1 and "inside torch.func transforms" in note["message"].iloc[0], note
