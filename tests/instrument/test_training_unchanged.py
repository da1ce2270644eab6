"""Instrumentation never changes training: parameters, optimizer state, batch-norm statistics
and the RNG stream are bit-identical after N steps with and without avionics."""

import copy

import pytest
import torch
from torch import nn

import instrument
from tests.helpers import batches, watch


def model_with_everything():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.Tanh(),
                         nn.LayerNorm(16), nn.Linear(16, 3))


OPTS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3),
}


def train(model, opt, data, monitor=None, accumulate=2):
    crit = nn.CrossEntropyLoss()
    torch.manual_seed(123)  # dropout draws from the global RNG
    for i in range(0, len(data), accumulate):
        opt.zero_grad()
        for x, y in data[i:i + accumulate]:
            loss = crit(model(x), y) / accumulate
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if monitor is not None:
            monitor.log(loss=loss)
    return torch.get_rng_state()


@pytest.mark.parametrize("opt_name", list(OPTS))
def test_bit_identical_with_and_without_watch(run_dir, opt_name):
    base = model_with_everything()
    data = batches(12, shape=(3, 8, 8))
    plain, watched = copy.deepcopy(base), copy.deepcopy(base)
    opt_plain, opt_watched = OPTS[opt_name](plain.parameters()), OPTS[opt_name](
        watched.parameters())
    rng_plain = train(plain, opt_plain, data)
    mon = watch(watched, opt_watched, run_dir, schedules={"*": 1})
    rng_watched = train(watched, opt_watched, data, monitor=mon)
    mon.close()
    assert torch.equal(rng_plain, rng_watched)
    for (k, a), (_, b) in zip(plain.state_dict().items(), watched.state_dict().items()):
        assert torch.equal(a, b), k  # parameters and batch-norm running statistics
    for sa, sb in zip(opt_plain.state.values(), opt_watched.state.values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    assert instrument.load(mon.run_dir).meta["steps"] == 6
