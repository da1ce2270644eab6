"""The train_mode and forward_order instruments: host-side facts recorded per step."""

import numpy as np
import torch
from torch import nn

import instrument
from instrument.store.schema import DKeys
from tests.helpers import layer_frame


def test_train_mode_flags_follow_model_and_module_switches(run_dir):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.1),
                          nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True,
                           schedules={"*": None, "train_mode": 1})
    expected = []
    for step in range(4):
        if step == 1:
            model.eval()  # forgot model.train()
        if step == 2:
            model.train()
            model[1].eval()  # frozen batch-norm statistics
        if step == 3:
            model.train()
        opt.zero_grad()
        model(torch.randn(6, 4)).pow(2).mean().backward()
        opt.step()
        expected.append([float(model.training), float(model[1].training),
                         float(model[3].training)])
    mon.close()
    r = instrument.load(mon.run_dir)
    assert r.layer_names(DKeys.TRAIN_MODE) == [DKeys.MODEL_LAYER, "1", "3"]
    flags = layer_frame(r, DKeys.TRAIN_MODE)
    for step, want in enumerate(expected):
        assert [flags[step][n] for n in (DKeys.MODEL_LAYER, "1", "3")] == want


class HeadFirst(nn.Module):
    """Defines its head before its body: model order differs from execution order."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 2)
        self.body = nn.Linear(4, 8)
        self.act = nn.ReLU()
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.head(self.act(self.body(x)))


def test_forward_order_is_execution_order(run_dir):
    torch.manual_seed(0)
    model = HeadFirst()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    mon = instrument.watch(model, opt, run=run_dir, strict=True,
                           schedules={"*": None, "forward_order": 1})
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(3, 4)).sum().backward()
        opt.step()
    mon.close()
    order = layer_frame(instrument.load(mon.run_dir), DKeys.FORWARD_ORDER)[1]
    assert (order["body"], order["act"], order["head"]) == (0, 1, 2)
    assert np.isnan(order["unused"])
