"""Healthy training stays quiet: not one finding, of any severity, on good runs.

The runs are real and genuinely healthy (they reach >= 85 % validation accuracy on digits) and
long enough (300-600 steps) for every windowed rule to be evaluated many times: MLP and CNN,
SGD with momentum, Adam and AdamW, with and without warm-up and cosine decay, with gradient
accumulation, batch norm, dropout with eval/train switches for validation, tanh activations;
and, beyond the digits models, a sequence model (embedding + LSTM) and an MSE regression.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import instrument
from tests.instrument.diagnosis.diag_scenarios import Config

pytestmark = pytest.mark.slow  # many real training runs: in make test, not in make test-fast

HEALTHY = {
    "mlp_sgd_momentum": Config(),
    "mlp_adam_warmup": Config(optimizer="adam", lr=2e-3, schedule="warmup"),
    "mlp_adamw_warmup_cosine": Config(optimizer="adamw", lr=2e-3, schedule="warmup_cosine"),
    "cnn_sgd_cosine": Config(model="cnn", schedule="cosine"),
    "cnn_adam_accumulate_warmup_cosine": Config(model="cnn", optimizer="adam", lr=1e-3,
                                                accumulate=2, batch=32,
                                                schedule="warmup_cosine"),
    "mlp_sgd_accumulate": Config(accumulate=4, batch=16),
    "bn_cnn_sgd_warmup_cosine": Config(model="bn_cnn", schedule="warmup_cosine"),
    "tanh_adamw_cosine": Config(model="tanh_mlp", optimizer="adamw", lr=2e-3,
                                schedule="cosine", seed=4),
    "dropout_adamw": Config(model="dropout_mlp", optimizer="adamw", lr=1e-3, batch=128,
                            seed=2),
    "wide_sgd_long_warmup_cosine": Config(model="wide_mlp", lr=0.02, steps=600,
                                          schedule="warmup_cosine", seed=1),
}


@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_run_is_quiet(trained, name):
    res, run = trained(name, HEALTHY[name])
    assert res["val_acc"] >= 0.85, f"{name} is not a healthy run: val_acc {res['val_acc']}"
    ev = run.events()
    assert ev.empty, ev[["step", "code", "severity", "layer", "message"]].to_string()
    rules = run.meta["diagnosis"]["rules"]
    assert all(status == "active" for status in rules.values()), rules  # all were checked


def test_healthy_runs_cover_the_acceptance_matrix():
    cfgs = HEALTHY.values()
    assert {"mlp", "cnn"} <= {c.model for c in cfgs}
    assert {"sgd", "adam", "adamw"} <= {c.optimizer for c in cfgs}
    assert {"none", "warmup", "cosine", "warmup_cosine"} <= {c.schedule for c in cfgs}
    assert any(c.accumulate > 1 for c in cfgs)


def _quiet(mon):
    ev = instrument.load(mon.run_dir).events()
    assert ev.empty, ev[["step", "code", "severity", "layer", "message"]].to_string()


def test_healthy_sequence_model_is_quiet(run_dir, one_thread):
    """Embedding + LSTM (tuple outputs, integer inputs), Adam with warm-up and cosine decay."""
    torch.manual_seed(0)
    vocab, length, classes, steps = 50, 12, 5, 250

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(vocab, 32)
            self.lstm = nn.LSTM(32, 64, batch_first=True)
            self.out = nn.Linear(64, classes)

        def forward(self, x):
            h, _ = self.lstm(self.emb(x))
            return self.out(h[:, -1])

    model, crit = Net(), nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1, (s + 1) / 40) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    mon = instrument.watch(model, opt, run=run_dir, strict=True, loss_fn=crit)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randint(0, vocab, (64, length), generator=g)
        opt.zero_grad()
        loss = crit(model(x), x[:, -1] % classes)  # the label is a function of the last token
        loss.backward()
        opt.step()
        sched.step()
        mon.log(loss=loss)
    mon.close()
    assert loss.item() < 0.2  # it learned
    _quiet(mon)


def test_healthy_regression_is_quiet(run_dir, one_thread):
    """MSE regression (no classifier rules apply) with tanh, SGD + momentum and clipping."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    crit = nn.MSELoss()
    mon = instrument.watch(model, opt, run=run_dir, strict=True, loss_fn=crit)
    g = torch.Generator().manual_seed(2)
    for _ in range(300):
        x = torch.randn(128, 4, generator=g)
        y = x[:, :1].sin() + x[:, 1:2] * x[:, 2:3]
        opt.zero_grad()
        loss = crit(model(x), y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        mon.log(loss=loss)
    mon.close()
    assert loss.item() < 0.05
    _quiet(mon)
