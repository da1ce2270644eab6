"""The logits instrument: row sums and logsumexp of the criterion input against torch."""

import math

import pytest
import torch
from torch import nn

import instrument
from instrument.store.schema import DKeys
from tests.helpers import scalar_frame


def run(run_dir, criterion, transform, steps=3, schedules=None):
    torch.manual_seed(0)
    model = nn.Linear(6, 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True, loss_fn=criterion,
                           schedules=schedules or {"*": None, "logits": 1})
    g = torch.Generator().manual_seed(5)
    seen = []
    for _ in range(steps):
        x, t = torch.randn(7, 6, generator=g), torch.randint(0, 5, (7,), generator=g)
        opt.zero_grad()
        out = transform(model(x))
        seen.append(out.detach().clone())
        criterion(out, t).backward()
        opt.step()
    mon.close()
    r = instrument.load(mon.run_dir)
    return {k: scalar_frame(r, k) for k in r.keys("scalar")}, seen


@pytest.mark.parametrize("name,transform", [
    ("logits", lambda z: z * 3),
    ("probabilities", lambda z: z.softmax(1)),
    ("log_probabilities", lambda z: z.log_softmax(1)),
])
def test_row_statistics_match_torch(run_dir, name, transform):
    got, seen = run(run_dir, nn.CrossEntropyLoss(), transform)
    for step, x in enumerate(seen):
        assert math.isclose(got[DKeys.LOGIT_MIN][step], x.min().item(), rel_tol=1e-6)
        assert math.isclose(got[DKeys.LOGIT_MAX][step], x.max().item(), rel_tol=1e-6)
        sum_dev = (x.sum(1) - 1).abs().max().item()
        lse_dev = torch.logsumexp(x, 1).abs().max().item()
        assert math.isclose(got[DKeys.LOGIT_SUM_DEV][step], sum_dev, rel_tol=1e-5,
                            abs_tol=1e-6)
        assert math.isclose(got[DKeys.LOGIT_LSE_DEV][step], lse_dev, rel_tol=1e-5,
                            abs_tol=1e-6)
    if name == "probabilities":
        assert got[DKeys.LOGIT_SUM_DEV][0] < 1e-5
    if name == "log_probabilities":
        assert got[DKeys.LOGIT_LSE_DEV][0] < 1e-5


def test_default_schedule_is_dense_then_every_tenth(run_dir):
    got, _ = run(run_dir, nn.CrossEntropyLoss(), lambda z: z, steps=45,
                 schedules={"*": None, "logits": instrument.instruments.Logits.default_schedule})
    assert sorted(got[DKeys.LOGIT_MIN]) == list(range(20)) + [20, 30, 40]


def test_bce_with_logits_records_the_range_only(run_dir):
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    crit = nn.BCEWithLogitsLoss()
    mon = instrument.watch(model, opt, run=run_dir, strict=True, loss_fn=crit,
                           schedules={"*": None, "logits": 1})
    x = torch.randn(4, 6)
    opt.zero_grad()
    z = model(x).sigmoid()
    crit(z, torch.ones(4, 3)).backward()
    opt.step()
    mon.close()
    r = instrument.load(mon.run_dir)
    assert scalar_frame(r, DKeys.LOGIT_MIN)[0] == pytest.approx(z.min().item())
    assert DKeys.LOGIT_SUM_DEV not in r.keys("scalar")
