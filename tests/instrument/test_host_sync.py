"""No host synchronization in the hot path, and exactly one device-to-host copy per logged step.

A TorchDispatchMode sees every op the training thread dispatches while the loop runs; ops that
force a device-to-host sync on a GPU (``.item()``/``float()``/``bool()`` all become
``_local_scalar_dense``; data-dependent shapes such as ``nonzero``) are counted. The same loop
without avionics is the reference (torch's own CPU Adam reads its step counter with ``.item()``):
watching must add none.
"""

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import instrument
from benchmarks.models import GPT, resnet18
from tests.helpers import batches, mlp, watch

SYNCING_OPS = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2",
               "equal", "is_nonzero", "allclose"}


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.syncs = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNCING_OPS:
            self.syncs.append(name)
        return func(*args, **(kwargs or {}))


def loop(model, opt, data, mon):
    crit = nn.CrossEntropyLoss()
    for x, y in data:
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        opt.step()
        with torch.no_grad():  # an evaluation forward: not the start of the next step
            acc = (model(x).argmax(1) == y).float().mean()
        mon.log(loss=loss, acc=acc)


class NoMonitor:
    def log(self, **kw):
        pass


def test_no_sync_and_one_copy_per_step(run_dir):
    for opt_cls in (torch.optim.Adam, torch.optim.SGD):
        model = mlp()
        plain = copy.deepcopy(model)
        data = batches(6)
        with CountOps() as reference:
            loop(plain, opt_cls(plain.parameters(), lr=1e-2), data, NoMonitor())
        opt = opt_cls(model.parameters(), lr=1e-2)
        mon = watch(model, opt, run_dir + opt_cls.__name__, schedules={"*": 1})
        with CountOps() as counter:
            loop(model, opt, data, mon)
        assert counter.syncs == reference.syncs, "avionics added host syncs"
        # 5 steps committed when step 6 began; the 6th is committed by close()
        assert mon.host_transfers == 5
        mon.close()
        assert mon.host_transfers == 6
        assert instrument.load(mon.run_dir).meta["steps"] == 6


def test_steps_without_scheduled_instruments_copy_nothing(run_dir):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = instrument.watch(model, opt, run=run_dir, strict=True,
                           schedules={"*": instrument.every(5)})
    crit = nn.CrossEntropyLoss()
    for x, y in batches(10):
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    mon.close()
    assert mon.host_transfers == 2  # steps 0 and 5


def _gpt_batches(n, vocab=64, ctx=16, batch=4):
    g = torch.Generator().manual_seed(2)
    out = []
    for _ in range(n):
        idx = torch.randint(0, vocab, (batch, ctx + 1), generator=g)
        out.append((idx[:, :-1].contiguous(), idx[:, 1:].contiguous()))
    return out


def _image_batches(n):
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g))
            for _ in range(n)]


NEW_MODELS = {
    # nanoGPT-shaped: tied embeddings, the loss inside forward, AdamW with decay groups
    "gpt_adamw": (lambda: GPT(blocks=1, d=16, heads=2, vocab=64, ctx=16), _gpt_batches,
                  lambda m, b: m(*b),
                  lambda m: torch.optim.AdamW(
                      [{"params": [p for p in m.parameters() if p.dim() >= 2]},
                       {"params": [p for p in m.parameters() if p.dim() < 2],
                        "weight_decay": 0.0}], lr=1e-3, weight_decay=0.1)),
    # ResNet-18-shaped with BatchNorm (running statistics are buffers updated in forward)
    "resnet_bn_sgd": (lambda: resnet18(width=4), _image_batches,
                      lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1]),
                      lambda m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)),
}


def _new_model_loop(model, opt, data, loss_of, mon):
    for batch in data:
        opt.zero_grad()
        loss = loss_of(model, batch)
        loss.backward()
        opt.step()
        mon.log(loss=loss)


@pytest.mark.slow
def test_no_sync_and_one_copy_per_step_on_gpt_and_resnet(run_dir):
    for name, (build, make_data, loss_of, make_opt) in NEW_MODELS.items():
        for schedules in ({"*": 1}, None):  # every instrument, and the defaults
            torch.manual_seed(0)
            model = build()
            plain = copy.deepcopy(model)
            data = make_data(6)
            with CountOps() as reference:
                _new_model_loop(plain, make_opt(plain), data, loss_of, NoMonitor())
            opt = make_opt(model)
            mon = instrument.watch(model, opt, run=f"{run_dir}-{name}-{schedules is None}",
                                   strict=True, schedules=schedules)
            with CountOps() as counter:
                _new_model_loop(model, opt, data, loss_of, mon)
            assert counter.syncs == reference.syncs, f"{name}: avionics added host syncs"
            assert mon.host_transfers == 5, name  # one per committed step
            mon.close()
            assert mon.host_transfers == 6, name
