"""Every rule code fires on a short real training run (digits, CPU) that has its pathology.

Each scenario switches on one bug; the test checks that the live engine stored a finding of
the expected code, with a message naming the step (and the layer where there is one), evidence
and a suggestion, and the scenario-specific facts (which layer, which step, before the NaN).
"""

from __future__ import annotations

import pytest

from tests.instrument.diagnosis.diag_scenarios import Config

pytestmark = pytest.mark.slow  # many real training runs: in make test, not in make test-fast

SCENARIOS = {
    # code: (scenario name, config)
    "nonfinite": ("log_input", Config(bugs={"log_input"}, steps=5)),
    "missing_zero_grad": ("no_zero_grad", Config(bugs={"no_zero_grad"}, steps=8)),
    "lr_too_high": ("lr_nan", Config(model="cnn", lr=10.0, steps=12)),
    "lr_too_low": ("lr_low", Config(lr=1e-5, steps=105)),
    "exploding_gradients": ("lr_jump", Config(schedule="jump", lr=0.02, steps=130)),
    "vanishing_gradients": ("deep_sigmoid", Config(model="deep_sigmoid", steps=25)),
    "dead_units": ("dead_bias", Config(bugs={"dead_bias"}, steps=45)),
    "saturated_units": ("tanh_huge_init", Config(model="tanh_mlp", bugs={"huge_init"},
                                                 steps=45)),
    "activation_scale": ("tiny_init", Config(bugs={"tiny_init"}, steps=45)),
    "frozen_parameters": ("unused_layer", Config(bugs={"unused_layer"}, steps=55)),
    "lr_schedule_increasing": ("short_cosine", Config(schedule="short_cosine", steps=90)),
    "eval_mode_training": ("eval_mode", Config(model="dropout_mlp", bugs={"eval_mode"},
                                               steps=6)),
    "loss_at_chance": ("shuffled_labels", Config(bugs={"shuffled_labels"}, lr=0.01,
                                                 steps=105)),
    "initial_loss": ("big_last_layer", Config(bugs={"big_last_layer"}, steps=3)),
    "input_scale": ("raw_pixels", Config(bugs={"raw_pixels"}, lr=1e-4, steps=8)),
    "probabilities_into_loss": ("softmax_into_ce", Config(bugs={"softmax_into_ce"}, steps=5)),
    "single_label_batch": ("unshuffled", Config(bugs={"unshuffled"}, steps=22)),
    "repeated_batch": ("repeated_batch", Config(bugs={"repeated_batch"}, steps=12)),
    "clipping_saturated": ("clip", Config(clip=0.05, steps=105)),
    "frozen_in_optimizer": ("frozen_in_optimizer", Config(bugs={"frozen_in_optimizer"},
                                                          steps=3)),
}


def findings(run, code):
    ev = run.events(codes=[code])
    return list(ev.itertuples())


@pytest.mark.parametrize("code", list(SCENARIOS))
def test_rule_fires_on_its_pathology(trained, code):
    name, cfg = SCENARIOS[code]
    res, run = trained(name, cfg)
    found = findings(run, code)
    assert found, f"{code} did not fire on {name}: {run.events()[['code', 'message']]}"
    first = found[0]
    assert f"step {first.step}" in first.message or str(first.step) in first.message
    if isinstance(first.layer, str):
        assert f"'{first.layer}'" in first.message or first.layer in first.message
    assert first.suggestion and first.evidence, first


def test_all_codes_of_the_issue_have_a_scenario():
    from instrument.diagnosis.rules import CODES

    contract = {"nonfinite", "missing_zero_grad", "lr_too_high", "lr_too_low",
                "exploding_gradients", "vanishing_gradients", "dead_units", "saturated_units",
                "activation_scale", "frozen_parameters", "lr_schedule_increasing",
                "eval_mode_training", "loss_at_chance", "initial_loss", "input_scale",
                "probabilities_into_loss", "single_label_batch", "repeated_batch"}
    assert contract <= set(CODES)
    assert set(CODES) == set(SCENARIOS)


def test_lr_too_high_fires_before_the_nan(trained):
    res, run = trained(*SCENARIOS["lr_too_high"])
    ev = run.events()
    nan_steps = ev[ev.code == "nonfinite"]["step"]
    assert len(nan_steps), "the scenario must diverge to NaN"
    warned = ev[ev.code == "lr_too_high"]["step"].min()
    assert warned < nan_steps.min(), ev[["step", "code", "message"]]


def test_missing_zero_grad_names_the_first_parameter_and_is_critical(trained):
    res, run = trained(*SCENARIOS["missing_zero_grad"])
    (f,) = findings(run, "missing_zero_grad")
    assert f.severity == "critical"
    assert f.step == 2  # stale at steps 1 and 2 (zero_grad_steps = 2)
    assert f.layer == "1.weight" and f.evidence["count"] == 6  # all parameters of the MLP
    assert "lr_too_high" not in set(run.events()["code"])  # explained by the missing zero_grad


def test_nonfinite_origin_is_the_log_module(trained):
    res, run = trained(*SCENARIOS["nonfinite"])
    ev = run.events(codes=["nonfinite"])
    assert ev.iloc[0]["layer"] == "0" and ev.iloc[0]["step"] == 0  # LogFeatures, first step
    assert (ev["severity"] == "critical").all()


def test_frozen_parameters_not_in_optimizer(trained):
    res, run = trained("not_in_optimizer", Config(bugs={"not_in_optimizer"}, steps=55))
    ev = run.events(codes=["frozen_parameters"])
    by_layer = {r.layer: r for r in ev.itertuples()}
    for name in ("5.weight", "5.bias"):  # the replaced head: gradients, but never updated
        assert by_layer[name].evidence["in_optimizer"] is False
        assert "not held by the optimizer" in by_layer[name].message
    assert "missing_zero_grad" not in set(run.events()["code"])


def test_frozen_parameters_unused_layer_names_both_parameters(trained):
    res, run = trained(*SCENARIOS["frozen_parameters"])
    ev = run.events(codes=["frozen_parameters"])
    assert set(ev["layer"]) == {"aux_head.weight", "aux_head.bias"}
    assert (ev["step"] == 49).all()  # the first full window of 50 recorded steps


def test_probabilities_into_nll_loss_and_log_probabilities_into_ce(trained):
    res, run = trained("nll_on_logits", Config(bugs={"nll_on_logits"}, steps=5))
    (f,) = findings(run, "probabilities_into_loss")
    assert "log_softmax is missing" in f.message and f.severity == "warning"
    assert "initial_loss" not in set(run.events()["code"])
    res, run = trained("log_softmax_into_ce", Config(bugs={"log_softmax_into_ce"}, steps=5))
    (f,) = findings(run, "probabilities_into_loss")
    assert f.severity == "info" and "log-probabilities" in f.message


def test_single_label_batch_sees_sorted_labels(trained):
    res, run = trained(*SCENARIOS["single_label_batch"])
    (f,) = findings(run, "single_label_batch")
    assert "not shuffled" in f.message and len(f.evidence["labels"]) >= 2


def test_eval_mode_names_the_model_and_its_dropout(trained):
    res, run = trained(*SCENARIOS["eval_mode_training"])
    (f,) = findings(run, "eval_mode_training")
    assert f.layer is None and f.evidence["modules"] == ["3"]  # the whole model; its Dropout
    assert f.step == 1  # two optimizer steps in eval mode (eval_steps = 2)
