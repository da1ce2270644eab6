"""repeated_batch: the same input batch is fed again and again.

Reads the ``inputs`` instrument's on-device fingerprint of each step's input batch: identical
fingerprints at ``repeat_steps`` consecutive recorded steps mean the loop trains on one batch
(e.g. ``next(iter(loader))`` outside the loop). Deliberate full-batch training, or overfitting
one batch as a sanity check, does this on purpose: disable the rule there.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    n = th.repeat_steps
    if not h.has(DKeys.INPUT_FP0) or h.count(DKeys.INPUT_FP0) < n:
        return []
    steps, a = h.scalar(DKeys.INPUT_FP0, n)
    _, b = h.scalar(DKeys.INPUT_FP1, n)
    if len(b) < n:
        return []
    tol = th.repeat_tolerance
    same = (np.abs(a - a[-1]) <= tol * np.abs(a[-1]) + 1e-300) & \
        (np.abs(b - b[-1]) <= tol * np.abs(b[-1]) + 1e-300)
    if not same.all():
        return []
    return [Finding(
        f"The same input batch was fed at each of the last {n} recorded steps "
        f"({steps[0]}..{steps[-1]}).", None,
        {"steps": [int(s) for s in steps], "fingerprint": [float(a[-1]), float(b[-1])]})]


RULE = Rule(
    code="repeated_batch", severity=schema.WARNING,
    summary="the same input batch is fed again and again",
    suggestion=("Draw a new batch every step: iterate over the DataLoader (for x, y in loader) "
                "instead of calling next(iter(loader)) once; if you train on the full dataset "
                "or overfit one batch on purpose, disable this rule."),
    check=check, needs=("inputs",), keys=(DKeys.INPUT_FP0, DKeys.INPUT_FP1),
    windows=lambda th: {DKeys.INPUT_FP0: th.repeat_steps, DKeys.INPUT_FP1: th.repeat_steps})
