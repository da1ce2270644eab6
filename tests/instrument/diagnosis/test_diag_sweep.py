"""The diagnosis sweep, shortened: every healthy configuration of benchmarks/diagnosis_sweep.py
trains without a warning (info allowed), every seeded bug is found with its rule's code.

The full-length runs and the table in docs/rules.md come from
``python benchmarks/diagnosis_sweep.py``; here each case trains its ``ci_steps`` (enough for
the windows of the rule it exercises), on one thread."""

from __future__ import annotations

import pytest

from benchmarks import diagnosis_sweep as S
from instrument.diagnosis.rules import CODES

pytestmark = pytest.mark.slow  # many real training runs: in make test, not in make test-fast


def _param(case):
    marks = [pytest.mark.slow] if case.slow else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in S.HEALTHY])
def test_healthy_configuration_gives_no_warning(case, tmp_path, one_thread):
    r = S.run_case(case, ci=True, root=str(tmp_path))
    ev = r["events"]
    assert r["ok"], ev[["step", "code", "severity", "layer", "message"]].to_string()


@pytest.mark.parametrize("case", [_param(c) for c in S.BUGS])
def test_seeded_bug_is_found_with_its_code(case, tmp_path, one_thread):
    r = S.run_case(case, ci=True, root=str(tmp_path))
    ev = r["events"]
    assert r["ok"], (case.expect, ev[["step", "code", "severity", "message"]].to_string()
                     if len(ev) else "no events")


def test_the_sweep_covers_the_families_and_the_rules():
    assert len(S.HEALTHY) >= 30 and len(S.BUGS) >= 25
    families = {c.family for c in S.HEALTHY}
    assert {"gpt", "hf_gpt2", "encoder", "pre_ln_encoder", "hf_bert", "resnet", "lstm",
            "finetune"} <= families
    assert any(c.bf16 for c in S.HEALTHY) and any(c.label_smoothing for c in S.HEALTHY)
    assert {"onecycle", "warmup_cosine"} <= {c.schedule for c in S.HEALTHY}
    assert any(c.clip for c in S.HEALTHY if c.optimizer == "adamw" and
               c.schedule == "warmup_cosine")
    expected = {c.expect for c in S.BUGS}
    assert expected <= set(CODES)
    # the README's rule list: every warning-level pathology has a seeded bug
    assert {"missing_zero_grad", "lr_too_high", "lr_too_low", "dead_units",
            "vanishing_gradients", "saturated_units", "nonfinite", "input_scale",
            "frozen_parameters", "lr_schedule_increasing", "eval_mode_training",
            "repeated_batch", "probabilities_into_loss", "single_label_batch",
            "loss_at_chance", "initial_loss"} <= expected
    # spread over the modern families, not only plain MLPs
    assert len({c.family for c in S.BUGS}) >= 6
    assert sum(c.family in ("mlp", "tanh_mlp", "deep_sigmoid") for c in S.BUGS) <= 5
