"""loss_at_chance: a classifier's loss stays near ln(number of classes).

A classifier that predicts the uniform distribution has cross-entropy ln(C). If the
criterion's loss (per target, whatever the reduction) stays within ``chance_tolerance`` of
ln(C) for ``chance_window`` recorded steps, in the median of the whole window and of both its
halves, after step ``chance_min_step``, the model is not learning anything from the inputs.
While the learning rate is still warming up the rule waits.
"""

from __future__ import annotations

import math

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import lr_warming_up
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    n = th.chance_window
    if not h.has(DKeys.CRIT_LOSS) or h.step < th.chance_min_step or \
            h.count(DKeys.CRIT_LOSS) < n:
        return []
    classes = h.now(DKeys.CRIT_CLASSES)
    if classes is None or classes < 2 or lr_warming_up(h):
        return []
    chance = math.log(classes)
    steps, loss = h.scalar(DKeys.CRIT_LOSS, n)
    half = n // 2
    medians = [nanmedian(loss), nanmedian(loss[:half]), nanmedian(loss[half:])]
    tol = th.chance_tolerance * chance
    if not all(abs(m - chance) <= tol for m in medians):
        return []
    return [Finding(
        f"The loss stays at chance level: median {fmt(medians[0])} over steps "
        f"{steps[0]}..{steps[-1]}, while ln({int(classes)} classes) = {fmt(chance)}: the model "
        f"predicts about the uniform distribution.", None,
        {"median_loss": medians[0], "chance": chance, "classes": int(classes),
         "window": [int(steps[0]), int(steps[-1])]})]


RULE = Rule(
    code="loss_at_chance", severity=schema.WARNING,
    summary="a classifier's loss stays near ln(number of classes)",
    suggestion=("Check that inputs and labels match (same order, same shuffling), that the "
                "learning rate is not far too low or too high, that the model's output is not "
                "cut off from the inputs, and try to overfit a single small batch first."),
    check=check, needs=("criterion",), needs_classifier=True,
    keys=(DKeys.CRIT_LOSS, DKeys.CRIT_CLASSES, "lr/*"),
    windows=lambda th: {DKeys.CRIT_LOSS: th.chance_window},
    suppressed_by=("lr_too_low", "lr_too_high", "missing_zero_grad", "dead_units",
                   "single_label_batch"))
