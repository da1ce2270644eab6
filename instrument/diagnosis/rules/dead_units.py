"""dead_units: a large fraction of a ReLU-like layer's units output zero for whole batches,
persistently.

Reads the ``activations`` instrument's dead fraction (units exactly zero for every sample of
the step's batch) of ReLU / ReLU6 / Threshold modules. Small batches make a healthy unit zero
for a whole batch by chance, so the rule stays quiet for a layer whose units saw fewer than
``dead_min_batch`` values in the step (``act/unit_observations``: batch rows times positions,
per rank; stores written before that key existed fall back to the input batch size).
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import RELU
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import columns
from instrument.store import schema
from instrument.store.schema import DKeys, Keys


def check(h, th, facts, state):
    if not h.has(Keys.ACT_DEAD_FRAC) or h.count(Keys.ACT_DEAD_FRAC) < th.act_records:
        return []
    steps, mat, names = h.layer(Keys.ACT_DEAD_FRAC, th.act_records)
    observed = _observations(h, th, names)
    out = []
    for j in columns(names, facts.modules_of_kind(RELU)):
        if observed is not None and not nanmedian(observed[:, j]) >= th.dead_min_batch:
            continue  # too few values per unit: zero for a whole batch by chance
        col = mat[:, j]
        high = np.nan_to_num(col, nan=0.0) >= th.dead_fraction
        if high[-1] and high.mean() >= th.act_persist:
            out.append(Finding(
                f"{fmt(100 * col[-1])}% of the units of '{names[j]}' output zero for the whole "
                f"batch at step {h.step} (median {fmt(100 * nanmedian(col))}% over the last "
                f"{len(col)} activation records, steps {steps[0]}..{steps[-1]}).", names[j],
                {"dead_fraction": float(col[-1]), "median": nanmedian(col),
                 "records": [int(s) for s in steps]}))
    return out


def _observations(h, th, names):
    """``(records, layers)`` values per unit behind the dead fractions, None if unknown."""
    if h.has(Keys.ACT_UNIT_OBSERVATIONS):
        _, mat, obs_names = h.layer(Keys.ACT_UNIT_OBSERVATIONS, th.act_records)
        if list(obs_names) == list(names):
            return mat
    _, batch = h.scalar(DKeys.INPUT_BATCH, th.act_records)  # stores from before the key
    if len(batch):
        return np.full((len(batch), len(names)), nanmedian(batch))
    return None


RULE = Rule(
    code="dead_units", severity=schema.WARNING,
    summary="a large fraction of a ReLU-like layer's units output zero for whole batches",
    suggestion=("Lower the learning rate or add warm-up (large early steps kill ReLUs), check "
                "the initialization (He/Kaiming for ReLU) and negative biases, normalize the "
                "inputs, or use LeakyReLU/GELU."),
    check=check, needs=("activations",),
    keys=(Keys.ACT_DEAD_FRAC, Keys.ACT_UNIT_OBSERVATIONS, DKeys.INPUT_BATCH),
    windows=lambda th: {Keys.ACT_DEAD_FRAC: th.act_records,
                        Keys.ACT_UNIT_OBSERVATIONS: th.act_records,
                        DKeys.INPUT_BATCH: th.act_records},
    suppressed_by=("missing_zero_grad",))
