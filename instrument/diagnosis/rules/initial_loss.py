"""initial_loss: a classifier's first losses are far from ln(number of classes).

A freshly initialized classifier should predict nearly uniform probabilities, so its first
losses are close to ln(C). Far above (``initial_high_factor`` times and ``initial_high_excess``
nats) means over-confident logits at initialization: weights or inputs too large, a final layer
with too large a gain. Far below (``initial_low_factor``) is reported as info only: expected
when fine-tuning a trained model, suspicious (leaked labels) otherwise.
"""

from __future__ import annotations

import math

import numpy as np

from instrument.diagnosis.facts import NLL
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    if state.get("done") or not h.has(DKeys.CRIT_LOSS):
        return []
    first = h.first(DKeys.CRIT_LOSS)
    if len(first) < th.initial_records:
        return []
    state["done"] = True  # decided once, on the first records
    classes = h.now(DKeys.CRIT_CLASSES)
    if classes is None or classes < 2:
        return []
    chance = math.log(classes)
    loss = float(np.median(first[:th.initial_records]))
    if not np.isfinite(loss):
        return []
    lse = h.first(DKeys.LOGIT_LSE_DEV)
    if facts.loss_kind(h, first=True) == NLL and len(lse) and lse[0] > th.prob_tolerance:
        # NLLLoss without log-probabilities: its loss is no cross-entropy at all
        # (probabilities_into_loss reports that)
        return []
    evidence = {"initial_loss": loss, "chance": chance, "classes": int(classes),
                "first_losses": [float(v) for v in first[:th.initial_records]]}
    what = (f"The loss at step {h.step} ({fmt(loss)}, before any update) is" if
            th.initial_records == 1 else
            f"The first {th.initial_records} losses (median {fmt(loss)}) are")
    head = f"{what} far {{}} ln({int(classes)} classes) = {fmt(chance)}"
    if loss > th.initial_high_factor * chance and loss - chance > th.initial_high_excess:
        return [Finding(head.format("above") + ": the initial logits are over-confident "
                        "(too large).", None, evidence)]
    if loss < th.initial_low_factor * chance:
        return [Finding(head.format("below") + ": the model predicts the labels before "
                        "training (a trained model, or labels leaking into the inputs?).", None,
                        evidence, severity=schema.INFO)]
    return []


RULE = Rule(
    code="initial_loss", severity=schema.WARNING,
    summary="a classifier's first losses are far from ln(number of classes)",
    suggestion=("At initialization the logits should be small: normalize the inputs, use the "
                "default (or a smaller-gain) initialization for the last layer, and check that "
                "the loss gets logits, not something scaled."),
    check=check, needs=("criterion",), needs_classifier=True,
    suppressed_by=("input_scale",),
    keys=(DKeys.CRIT_LOSS, DKeys.CRIT_CLASSES, DKeys.LOGIT_LSE_DEV, DKeys.CRIT_NLL))
