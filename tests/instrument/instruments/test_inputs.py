"""The inputs instrument: input statistics against torch, and a fingerprint that tells batches
apart without copying them to the host."""

import math

import torch
from torch import nn

import instrument
from instrument.diagnosis.keys import DKeys
from tests.helpers import mlp, scalar_frame

ONLY = {"*": None, "inputs": 1}


def run(run_dir, model, opt, feeds, accumulate=1):
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules=ONLY)
    for chunk in range(0, len(feeds), accumulate):
        opt.zero_grad()
        for x in feeds[chunk:chunk + accumulate]:
            model(x).float().pow(2).mean().backward()
        opt.step()
    mon.close()
    r = instrument.load(mon.run_dir)
    return {k: scalar_frame(r, k) for k in r.keys("scalar")}


def test_statistics_match_torch_over_accumulated_micro_batches(run_dir):
    g = torch.Generator().manual_seed(0)
    feeds = [torch.randn(16, 8, generator=g) * 3 + 5 for _ in range(6)]
    model = mlp()
    got = run(run_dir, model, torch.optim.SGD(model.parameters(), lr=1e-3), feeds,
              accumulate=2)
    for step in range(3):
        x = torch.cat(feeds[2 * step: 2 * step + 2]).double()
        assert math.isclose(got[DKeys.INPUT_MEAN][step], x.mean().item(), rel_tol=1e-6)
        assert math.isclose(got[DKeys.INPUT_STD][step], x.std().item(), rel_tol=1e-6)
        assert got[DKeys.INPUT_MIN][step] == x.min().item()
        assert got[DKeys.INPUT_MAX][step] == x.max().item()
        assert got[DKeys.INPUT_BATCH][step] == 16


def test_fingerprint_same_batch_same_value_other_batch_other_value(run_dir):
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    perm = a[torch.randperm(16, generator=g)]  # the same samples in another order
    feeds = [a, a.clone(), b, perm, a]
    state = torch.get_rng_state()
    model = mlp()
    got = run(run_dir, model, torch.optim.SGD(model.parameters(), lr=0.0), feeds)
    assert torch.equal(state, torch.get_rng_state())  # the user's RNG stream is untouched
    fp = [(got[DKeys.INPUT_FP0][s], got[DKeys.INPUT_FP1][s]) for s in range(5)]
    assert fp[0] == fp[1] == fp[4]
    assert len({fp[0], fp[2], fp[3]}) == 3
    # the sum of projections does not see the order (up to rounding), the weighted sum does
    assert math.isclose(fp[3][0], fp[0][0], rel_tol=1e-5) and fp[3][1] != fp[0][1]


def test_integer_inputs_get_a_fingerprint_but_no_statistics(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 5, 3))
    g = torch.Generator().manual_seed(2)
    tokens = [torch.randint(0, 50, (4, 5), generator=g) for _ in range(3)]
    got = run(run_dir, model, torch.optim.SGD(model.parameters(), lr=0.1),
              [tokens[0], tokens[1], tokens[0]])
    assert DKeys.INPUT_MEAN not in got and got[DKeys.INPUT_BATCH][0] == 4
    assert got[DKeys.INPUT_FP0][0] == got[DKeys.INPUT_FP0][2] != got[DKeys.INPUT_FP0][1]
