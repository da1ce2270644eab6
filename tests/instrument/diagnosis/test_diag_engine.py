"""The engine, its thresholds and its bounded history, checked against brute-force references."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from instrument.diagnosis import Engine, Finding, RunFacts, Thresholds
from instrument.diagnosis.history import History, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules import CODES, RULES
from instrument.store import schema
from instrument.store.records import Event, LayerValues, StepData


# ---- thresholds --------------------------------------------------------------------------------
def test_threshold_overrides_and_clear_errors():
    th = Thresholds.from_overrides({"dead_fraction": 0.7, "frozen_window": 20.0,
                                    "disabled_rules": ["repeated_batch"]}, known_codes=CODES)
    assert th.dead_fraction == 0.7 and th.frozen_window == 20 and isinstance(th.frozen_window,
                                                                             int)
    assert th.disabled_rules == ("repeated_batch",)
    assert th.overrides() == {"dead_fraction": 0.7, "frozen_window": 20,
                              "disabled_rules": ["repeated_batch"]}
    with pytest.raises(ValueError, match="Did you mean dead_fraction"):
        Thresholds.from_overrides({"dead_fractoin": 0.7})
    with pytest.raises(TypeError, match="takes a number"):
        Thresholds.from_overrides({"dead_fraction": "0.7"})
    with pytest.raises(TypeError, match="takes a number"):
        Thresholds.from_overrides({"dead_fraction": True})
    with pytest.raises(TypeError, match="integer"):
        Thresholds.from_overrides({"frozen_window": 2.5})
    with pytest.raises(ValueError, match="positive"):
        Thresholds.from_overrides({"dead_fraction": -1})
    with pytest.raises(ValueError, match=">= 1"):
        Thresholds.from_overrides({"frozen_window": 0})
    with pytest.raises(ValueError, match="unknown rule code"):
        Thresholds.from_overrides({"disabled_rules": ["nope"]}, known_codes=CODES)
    with pytest.raises(TypeError, match="dict"):
        Thresholds.from_overrides([("dead_fraction", 0.7)])


def test_every_threshold_is_documented_and_every_rule_complete():
    for name in Thresholds.names():
        assert len(Thresholds.doc(name)) > 20, name
    assert len(set(CODES)) == len(CODES)
    for rule in RULES:
        assert rule.summary and rule.suggestion and rule.check.__module__.endswith(rule.code)


# ---- history -----------------------------------------------------------------------------------
def test_history_windows_match_a_brute_force_log():
    rng = np.random.default_rng(0)
    h = History(maxlen=7, keys=["s", "l", "lr/*"])
    log_s, log_l = [], []
    names = ["a", "b"]
    for step in range(40):
        d = StepData(step)
        if rng.random() < 0.7:
            d.scalars["s"] = float(rng.normal())
            log_s.append((step, d.scalars["s"]))
        if step == 20:
            names = ["a", "b", "c"]  # a series that grows
        vals = rng.normal(size=len(names))
        d.layers["l"] = LayerValues(names, vals)
        log_l.append((step, dict(zip(names, np.float32(vals)))))
        d.scalars["lr/0"] = 1.0
        d.scalars["ignored"] = 5.0
        h.push(d)
        for n in (1, 3, 7, None):
            steps, values = h.scalar("s", n)
            ref = log_s[-7:][-(n or 7):]
            assert list(steps) == [s for s, _ in ref] and list(values) == [v for _, v in ref]
            steps, mat, lnames = h.layer("l", n)
            ref = log_l[-7:][-(n or 7):]
            assert list(steps) == [s for s, _ in ref]
            for row, (_, vals_ref) in zip(mat, ref):
                for name, v in zip(lnames, row):
                    assert (np.isnan(v) and name not in vals_ref) or v == vals_ref[name]
        assert h.has("s") == ("s" in d.scalars) and h.has("l") and not h.has("ignored")
    assert h.count("l") == 40 and h.scalar_keys("lr/") == ["lr/0"]
    assert list(h.first("s")) == [v for _, v in log_s[:16]]


def test_history_memory_is_bounded():
    h = History(maxlen=16)
    for step in range(5000):
        d = StepData(step, scalars={"x": 1.0})
        d.layers["y"] = LayerValues(["p", "q"], [1.0, 2.0])
        h.push(d)
    assert h._scalars["x"]._rows.shape == (32, 1) and h._layers["y"]._rows.shape == (32, 2)
    assert len(h.scalar("x")[0]) == 16


def test_nanmedian_matches_numpy():
    rng = np.random.default_rng(1)
    import warnings

    for _ in range(300):
        a = rng.normal(size=(rng.integers(1, 9), rng.integers(1, 9)))
        a[rng.random(a.shape) < 0.3] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for axis in (0, 1):
                np.testing.assert_allclose(nanmedian(a, axis=axis), np.nanmedian(a, axis=axis))
            np.testing.assert_allclose(nanmedian(a), np.nanmedian(a))


# ---- engine ------------------------------------------------------------------------------------
def _rule(code, check, **kw):
    return Rule(code=code, severity=kw.pop("severity", schema.WARNING), summary="s",
                suggestion="do this", check=check, **kw)


def _steps(n, **scalars):
    return [StepData(i, scalars={k: v(i) if callable(v) else v for k, v in scalars.items()})
            for i in range(n)]


def test_findings_are_deduplicated_per_code_and_layer_and_logged_once(caplog):
    def check(h, th, facts, state):
        return [Finding(f"x at step {h.step}", layer) for layer in ("a", "b")]

    def run_wide(h, th, facts, state):
        return [Finding(f"y at step {h.step}", f"layer{h.step}")]

    eng = Engine(RunFacts(), rules=[_rule("per_layer", check),
                                    _rule("run_wide", run_wide, per_layer=False)])
    with caplog.at_level(logging.INFO, logger="avionics.diagnosis"):
        stored = [e for d in _steps(20) for e in eng(d)]
    assert [(e.code, e.layer, e.step) for e in stored] == [
        ("per_layer", "a", 0), ("per_layer", "b", 0), ("run_wide", "layer0", 0)]
    assert all(isinstance(e, Event) and e.suggestion == "do this" for e in stored)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and all("Try: do this" in m for m in lines)


def test_console_lines_per_code_are_capped(caplog):
    def check(h, th, facts, state):  # one new layer per step: never grouped
        return [Finding("dead", f"l{i}") for i in range(h.step + 1)]

    eng = Engine(RunFacts(), rules=[_rule("many", check)])
    with caplog.at_level(logging.INFO, logger="avionics.diagnosis"):
        stored = [e for d in _steps(10) for e in eng(d)]
    assert len(stored) == 10  # all stored ...
    assert len(caplog.records) == 4 and "further layers" in caplog.records[-1].getMessage()


def test_a_failing_rule_is_disabled_with_one_event_and_strict_reraises(caplog):
    def broken(h, th, facts, state):
        raise ZeroDivisionError("boom")

    calls = []

    def fine(h, th, facts, state):
        calls.append(h.step)
        return []

    eng = Engine(RunFacts(), rules=[_rule("broken", broken), _rule("fine", fine)])
    out = [e for d in _steps(3) for e in eng(d)]
    assert [(e.code, e.layer) for e in out] == [(schema.INSTRUMENT_ERROR, "rule:broken")]
    assert calls == [0, 1, 2] and "disabled after an error" in eng.status["broken"]
    strict = Engine(RunFacts(), rules=[_rule("broken", broken)], strict=True)
    with pytest.raises(ZeroDivisionError):
        strict(StepData(0))


def test_suppression_pausing_after_nan_and_source_events():
    def cause(h, th, facts, state):
        return [Finding("cause")] if h.step == 3 else []

    seen = []

    def symptom(h, th, facts, state):
        seen.append(h.step)
        return [Finding("symptom")] if h.step >= 4 else []

    eng = Engine(RunFacts(), rules=[_rule("cause", cause),
                                    _rule("symptom", symptom, suppressed_by=("cause",))])
    steps = _steps(6, loss=lambda i: np.nan if i == 1 else 1.0)
    nan_event = Event(schema.NONFINITE, schema.CRITICAL, "nan", step=1, layer="3")
    steps[1].events = [nan_event]
    stored = [e for d in steps for e in eng(d)]
    assert [e.code for e in stored] == ["cause"]  # nonfinite was stored at source already
    assert seen == [0, 2]  # paused at the NaN step, suppressed from the cause's step on
    assert [(f.code, f.stored) for f in eng.findings] == [("nonfinite", True), ("cause", False)]


def test_a_cause_found_later_is_linked_to_the_symptoms_it_explains():
    def cause(h, th, facts, state):
        return [Finding("the cause.", evidence={"x": 1})] if h.step == 10 else []

    def symptom(h, th, facts, state):
        return [Finding("symptom", f"l{h.step}")] if h.step in (2, 7) else []

    def other(h, th, facts, state):  # not silenced by the cause: not linked to it
        return [Finding("other")] if h.step == 7 else []

    eng = Engine(RunFacts(), Thresholds.from_overrides({"explain_steps": 5}),
                 rules=[_rule("cause", cause), _rule("symptom", symptom, suppressed_by=("cause",)),
                        _rule("other", other)])
    stored = [e for d in _steps(12) for e in eng(d)]
    assert {(f.code, f.layer): f.explained_by for f in eng.findings} == {
        ("symptom", "l2"): None,  # 8 steps before the cause: outside explain_steps
        ("symptom", "l7"): ("cause", 10), ("other", None): None, ("cause", None): None}
    [ev] = [e for e in stored if e.code == "cause"]  # the stored event says it, live
    assert ev.evidence == {"x": 1, "explains": ["symptom@7:l7"]}
    assert ev.message == "the cause. It probably causes the earlier finding(s) symptom: fix it first."


def test_rules_needing_the_criterion_are_silent_and_say_why():
    eng = Engine(RunFacts(instruments=["grad_norm", "weight_norm", "update", "activations",
                                       "inputs", "zero_grad", "train_mode"]))
    for code in ("loss_at_chance", "initial_loss", "single_label_batch",
                 "probabilities_into_loss"):
        assert "watch(..., loss_fn=criterion)" in eng.status[code], eng.status[code]
    assert eng.status["dead_units"] == "active"
    bce = Engine(RunFacts(instruments=["criterion", "logits"],
                          criterion={"class": "MSELoss", "kind": "other"}))
    assert "classification criterion" in bce.status["loss_at_chance"]


def test_layer_windows_are_as_short_as_the_rules_need():
    from instrument.store.schema import Keys

    facts = RunFacts(instruments=["grad_norm", "weight_norm", "update", "activations"])
    th = Thresholds()
    eng = Engine(facts, th, console=False)
    names = [f"p{i}" for i in range(3)]
    for step in range(300):
        d = StepData(step, scalars={"loss": 1.0, "grad_norm/total": 1.0})
        for key in (Keys.UPDATE_RATIO, Keys.GRAD_NORM, Keys.WEIGHT_NORM, Keys.ACT_STD):
            d.layers[key] = LayerValues(names, np.ones(3))
        eng.observe(d)
    kept = {k: ring.maxlen for k, ring in eng.history._layers.items()}
    assert kept == {Keys.UPDATE_RATIO: th.lr_low_window, Keys.GRAD_NORM: th.frozen_window,
                    Keys.WEIGHT_NORM: th.frozen_window, Keys.ACT_STD: th.act_records}
    assert eng.history._scalars["grad_norm/total"].maxlen == th.history


def test_every_rule_pickles_as_a_reference_to_its_module():
    import pickle

    from instrument.diagnosis.rules import RULES
    for rule in RULES:
        assert pickle.loads(pickle.dumps(rule)) is rule
