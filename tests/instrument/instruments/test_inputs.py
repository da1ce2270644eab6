"""The inputs and input_stats instruments: input statistics against torch, and a fingerprint that tells batches
apart without copying them to the host."""

import math

import torch
from torch import nn

import instrument
from instrument.store.schema import DKeys
from tests.helpers import mlp, scalar_frame

ONLY = {"*": None, "inputs": 1, "input_stats": 1}


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
        assert got[DKeys.INPUT_BATCH][step] == 32  # samples of the step: both micro-batches


def test_fingerprint_same_batch_same_value_other_batch_other_value(run_dir):
    """Identical batches give identical fingerprints; a split of the batch over micro-batches
    (or ranks) gives the same sums, because both numbers are sums over samples."""
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
    assert fp[2][0] != fp[0][0] and fp[2][1] != fp[0][1]
    # the same samples in another order: the same batch (up to summation order)
    assert all(math.isclose(u, v, rel_tol=1e-5) for u, v in zip(fp[3], fp[0]))
    # brute force: sums over samples of the projection and of its square
    w = torch.rand(8, generator=torch.Generator().manual_seed(0x5EED + 8)) + 0.5
    proj = b @ w
    assert math.isclose(fp[2][0], proj.sum().item(), rel_tol=1e-5)
    assert math.isclose(fp[2][1], (proj * proj).sum().item(), rel_tol=1e-5)


def test_integer_inputs_get_a_fingerprint_but_no_statistics(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8 * 5, 3))
    g = torch.Generator().manual_seed(2)
    tokens = [torch.randint(0, 50, (4, 5), generator=g) for _ in range(3)]
    got = run(run_dir, model, torch.optim.SGD(model.parameters(), lr=0.1),
              [tokens[0], tokens[1], tokens[0]])
    assert DKeys.INPUT_MEAN not in got and got[DKeys.INPUT_BATCH][0] == 4
    assert got[DKeys.INPUT_FP0][0] == got[DKeys.INPUT_FP0][2] != got[DKeys.INPUT_FP0][1]


def test_fingerprint_adds_up_over_micro_batches(run_dir):
    g = torch.Generator().manual_seed(6)
    a = torch.randn(16, 8, generator=g)
    model = mlp()
    whole = run(run_dir + "w", model, torch.optim.SGD(model.parameters(), lr=0.0), [a])
    halves = run(run_dir + "h", model, torch.optim.SGD(model.parameters(), lr=0.0),
                 [a[:8], a[8:]], accumulate=2)
    for key in (DKeys.INPUT_FP0, DKeys.INPUT_FP1, DKeys.INPUT_BATCH, DKeys.INPUT_MEAN):
        assert math.isclose(whole[key][0], halves[key][0], rel_tol=1e-5), key


def test_default_schedules_fingerprint_in_pairs_and_scale_densely_then_every_10th(run_dir):
    g = torch.Generator().manual_seed(4)
    feeds = [torch.randn(8, 8, generator=g) for _ in range(35)]
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    mon = instrument.watch(model, opt, run=run_dir, strict=True)
    for x in feeds:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    mon.close()
    r = instrument.load(mon.run_dir)
    # every step for 20 steps, then two neighbouring steps in every ten
    assert sorted(scalar_frame(r, DKeys.INPUT_FP0)) == list(range(22)) + [30, 31]
    stats = scalar_frame(r, DKeys.INPUT_MEAN)
    assert sorted(stats) == list(range(10)) + [10, 20, 30]
    for step, value in stats.items():
        assert math.isclose(value, feeds[step].double().mean().item(), rel_tol=1e-5, abs_tol=1e-7)
