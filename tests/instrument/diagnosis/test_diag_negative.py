"""Healthy training stays quiet: not one finding, of any severity, on good runs.

The runs are real and genuinely healthy (they reach >= 85 % validation accuracy on digits) and
long enough (300-600 steps) for every windowed rule to be evaluated many times: MLP and CNN,
SGD with momentum, Adam and AdamW, with and without warm-up and cosine decay, with gradient
accumulation, batch norm, dropout with eval/train switches for validation, tanh activations.
"""

from __future__ import annotations

import pytest

from tests.instrument.diagnosis.diag_scenarios import Config

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
