"""The criterion instrument: per-target loss, classes and target range against torch."""

import math

import pytest
import torch
from torch import nn

import instrument
from instrument.store.schema import DKeys
from tests.helpers import scalar_frame

ONLY = {"*": None, "criterion": 1}


def run(run_dir, criterion, batches, make_target=None):
    torch.manual_seed(0)
    model = nn.Linear(6, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, schedules=ONLY,
                           loss_fn=criterion)
    for x, t in batches:
        opt.zero_grad()
        loss = criterion(model(x), t)
        (loss.sum() if loss.dim() else loss).backward()
        opt.step()
    mon.close()
    r = instrument.load(mon.run_dir)
    return {k: scalar_frame(r, k) for k in r.keys("scalar")}, model


def data(n=3, ignore=False):
    g = torch.Generator().manual_seed(3)
    out = []
    for _ in range(n):
        t = torch.randint(0, 4, (10,), generator=g)
        if ignore:
            t[:3] = -100
        out.append((torch.randn(10, 6, generator=g), t))
    return out


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_per_target_whatever_the_reduction(run_dir, reduction):
    batches = data(ignore=True)
    crit = nn.CrossEntropyLoss(reduction=reduction)
    got, _ = run(run_dir, crit, batches)
    torch.manual_seed(0)
    ref_model = nn.Linear(6, 4)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.01)
    for step, (x, t) in enumerate(batches):
        per = nn.functional.cross_entropy(ref_model(x), t, reduction="none")
        valid = t != -100
        # mean: torch's mean over valid targets; sum: sum / valid count; none: mean of rows
        want = {"mean": per[valid].mean(), "sum": per.sum() / valid.sum(),
                "none": per.mean()}[reduction]
        assert math.isclose(got[DKeys.CRIT_LOSS][step], want.item(), rel_tol=1e-5)
        assert got[DKeys.CRIT_TARGETS][step] == valid.sum().item()
        assert got[DKeys.CRIT_TARGET_MIN][step] == t[valid].min().item()
        assert got[DKeys.CRIT_TARGET_MAX][step] == t[valid].max().item()
        assert got[DKeys.CRIT_CLASSES][step] == 4
        ref_opt.zero_grad()
        loss = nn.functional.cross_entropy(ref_model(x), t, reduction=reduction)
        (loss.sum() if loss.dim() else loss).backward()
        ref_opt.step()


def test_soft_labels_have_no_class_range(run_dir):
    g = torch.Generator().manual_seed(4)
    batches = [(torch.randn(8, 6, generator=g), torch.softmax(torch.randn(8, 4, generator=g),
                                                              1)) for _ in range(2)]
    got, _ = run(run_dir, nn.CrossEntropyLoss(), batches)
    assert DKeys.CRIT_TARGETS not in got and DKeys.CRIT_LOSS in got


def test_bce_targets_range(run_dir):
    batches = [(torch.randn(8, 6), torch.zeros(8, 4)), (torch.randn(8, 6), torch.ones(8, 4)),
               (torch.randn(8, 6), (torch.arange(32).reshape(8, 4) % 2).float())]
    got, _ = run(run_dir, nn.BCEWithLogitsLoss(), batches)
    assert [got[DKeys.CRIT_TARGET_MIN][s] for s in range(3)] == [0, 1, 0]
    assert [got[DKeys.CRIT_TARGET_MAX][s] for s in range(3)] == [0, 1, 1]
    assert got[DKeys.CRIT_TARGETS][0] == 32
