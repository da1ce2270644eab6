"""single_label_batch: every target in a batch is the same class, again and again.

Reads the ``criterion`` instrument's smallest and largest target per step. Reported when at
least ``single_fraction`` of the last ``single_window`` recorded batches (with at least
``single_min_targets`` targets) hold one class only, and either the class changes between those
batches (data sorted by label: not shuffled) or it never changes (every target is the same
class). Imbalanced data, where single-class batches are all of the majority class but other
batches mix, stays quiet.
"""

from __future__ import annotations

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    n = th.single_window
    if not h.has(DKeys.CRIT_TARGETS) or h.count(DKeys.CRIT_TARGETS) < n:
        return []
    steps, count = h.scalar(DKeys.CRIT_TARGETS, n)
    _, lo = h.scalar(DKeys.CRIT_TARGET_MIN, n)
    _, hi = h.scalar(DKeys.CRIT_TARGET_MAX, n)
    if len(lo) < n or len(hi) < n:
        return []
    big = count >= th.single_min_targets
    single = big & (lo == hi)
    if not single[-1] or single.sum() < th.single_fraction * n:
        return []
    labels = sorted({float(v) for v in lo[single]})
    if len(labels) > 1:
        why = (f"the class changes from batch to batch ({len(labels)} classes): the data "
               f"looks sorted by label and is not shuffled")
    elif single.all():
        why = f"always class {fmt(labels[0])}: every target has the same label"
    else:
        return []
    return [Finding(
        f"{int(single.sum())} of the last {n} batches (steps {steps[0]}..{steps[-1]}) hold a "
        f"single class; {why}.", None,
        {"single_label_batches": int(single.sum()), "window": n,
         "labels": labels[:20]})]


RULE = Rule(
    code="single_label_batch", severity=schema.WARNING,
    summary="every target in a batch is the same class, again and again (unshuffled data)",
    suggestion=("Shuffle the training data (DataLoader(..., shuffle=True) or a random "
                "sampler), and check that the labels are loaded correctly."),
    check=check, needs=("criterion",),
    keys=(DKeys.CRIT_TARGETS, DKeys.CRIT_TARGET_MIN, DKeys.CRIT_TARGET_MAX),
    windows=lambda th: {k: th.single_window for k in (DKeys.CRIT_TARGETS, DKeys.CRIT_TARGET_MIN,
                                                      DKeys.CRIT_TARGET_MAX)})
