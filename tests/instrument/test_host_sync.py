"""No host synchronization in the hot path, and exactly one device-to-host copy per logged step.

A TorchDispatchMode sees every op the training thread dispatches while the loop runs; ops that
force a device-to-host sync on a GPU (``.item()``/``float()``/``bool()`` all become
``_local_scalar_dense``; data-dependent shapes such as ``nonzero``) are counted. The same loop
without avionics is the reference (torch's own CPU Adam reads its step counter with ``.item()``):
watching must add none.
"""

import copy

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import instrument
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
