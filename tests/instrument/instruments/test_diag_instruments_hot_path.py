"""The diagnosis instruments with a criterion attached: training stays bit-identical and the
hot path gains no host synchronization."""

import copy

import pytest
import torch
from torch import nn

import instrument
from tests.helpers import batches
from tests.instrument.test_host_sync import CountOps

DIAG = ("zero_grad", "train_mode", "forward_order", "inputs", "input_stats", "criterion",
        "logits")


def model_with_everything():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.Tanh(),
                         nn.Linear(16, 3))


def train(model, opt, data, crit, monitor=None):
    torch.manual_seed(123)
    for i in range(0, len(data), 2):
        opt.zero_grad()
        for x, y in data[i:i + 2]:
            loss = crit(model(x), y) / 2
            loss.backward()
        opt.step()
        if monitor is not None:
            monitor.log(loss=loss)
    return torch.get_rng_state()


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.AdamW])
def test_bit_identical_with_the_criterion_hooked(run_dir, opt_cls):
    base = model_with_everything()
    data = batches(8, shape=(3, 8, 8))
    plain, watched = copy.deepcopy(base), copy.deepcopy(base)
    crit_plain, crit_watched = nn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    o1, o2 = opt_cls(plain.parameters(), lr=0.01), opt_cls(watched.parameters(), lr=0.01)
    rng_plain = train(plain, o1, data, crit_plain)
    mon = instrument.watch(watched, o2, run=run_dir, strict=True, loss_fn=crit_watched,
                           schedules={"*": 1})
    rng_watched = train(watched, o2, data, crit_watched, mon)
    mon.close()
    assert torch.equal(rng_plain, rng_watched)
    for (k, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), k
    assert set(DIAG) <= set(instrument.load(mon.run_dir).meta["instruments"])


def test_no_host_sync_added(run_dir):
    data = batches(6, shape=(3, 8, 8))
    plain = model_with_everything()
    with CountOps() as reference:
        train(plain, torch.optim.SGD(plain.parameters(), lr=0.01), data, nn.CrossEntropyLoss())
    model = model_with_everything()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    crit = nn.CrossEntropyLoss()
    mon = instrument.watch(model, opt, run=run_dir, strict=True, loss_fn=crit,
                           schedules={"*": None, **{k: 1 for k in DIAG}})
    with CountOps() as counter:
        train(model, opt, data, crit, mon)
    mon.close()
    assert counter.syncs == reference.syncs
