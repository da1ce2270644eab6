"""saturated_units: a large fraction of a hidden tanh/sigmoid layer's outputs sit at their limits.

Reads the ``activations`` instrument's saturation fraction (outputs within 3 % of either end of
the range, e.g. |tanh| > 0.97) of bounded activations. Saturated units pass almost no gradient.
The output layer is left out: a confident sigmoid output is supposed to sit near 0 or 1.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import BOUNDED
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import columns, output_module
from instrument.store import schema
from instrument.store.schema import DKeys, Keys


def check(h, th, facts, state):
    key = Keys.ACT_SATURATION_FRAC
    if not h.has(key) or h.count(key) < th.act_records:
        return []
    steps, mat, names = h.layer(key, th.act_records)
    last = output_module(h, facts)
    out = []
    for j in columns(names, facts.modules_of_kind(BOUNDED)):
        if names[j] == last:
            continue
        col = mat[:, j]
        high = np.nan_to_num(col, nan=0.0) >= th.saturation_fraction
        if high[-1] and high.mean() >= th.act_persist:
            out.append(Finding(
                f"{fmt(100 * col[-1])}% of the outputs of '{names[j]}' are saturated (at the "
                f"limits of the activation's range) at step {h.step}; median "
                f"{fmt(100 * nanmedian(col))}% over steps {steps[0]}..{steps[-1]}.", names[j],
                {"saturation_fraction": float(col[-1]), "median": nanmedian(col),
                 "records": [int(s) for s in steps]}))
    return out


RULE = Rule(
    code="saturated_units", severity=schema.WARNING,
    summary="a large fraction of a hidden tanh/sigmoid layer's outputs sit at their limits",
    suggestion=("Scale the pre-activations down: normalize the inputs, use Xavier/Glorot "
                "initialization (or a smaller gain), add normalization layers before the "
                "activation, or lower the learning rate."),
    check=check, needs=("activations",), keys=(Keys.ACT_SATURATION_FRAC, DKeys.FORWARD_ORDER),
    windows=lambda th: {Keys.ACT_SATURATION_FRAC: th.act_records, DKeys.FORWARD_ORDER: 1},
    suppressed_by=("missing_zero_grad", "input_scale"))
