"""saturated_units: a large fraction of a hidden tanh/sigmoid layer's outputs sit at their limits.

Reads the ``activations`` instrument's saturation fraction (outputs within 3 % of either end of
the range, e.g. |tanh| > 0.97) of bounded activations. Saturated units pass almost no gradient.
The output layer is left out: a confident sigmoid output is supposed to sit near 0 or 1; so
is a bounded activation that feeds the output layer directly (BERT's pooler tanh before the
classifier) unless it was saturated at its first record already: its units are the final
features, and they saturate as the classifier grows confident like a confident output does;
saturated from the start, the initialization or the inputs put them there.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import BOUNDED
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import by_depth, columns, next_consumers, output_module
from instrument.store import schema
from instrument.store.schema import DKeys, Keys


def check(h, th, facts, state):
    key = Keys.ACT_SATURATION_FRAC
    if not h.has(key):
        return []
    first = state.setdefault("first", {})  # saturation at each module's first record
    for name, v in zip(h.names(key), h.now(key)):
        if name not in first and np.isfinite(v):
            first[name] = float(v)
    if h.count(key) < th.act_records:
        return []
    steps, mat, names = h.layer(key, th.act_records)
    last = output_module(h, facts)
    kinds = {m["name"]: m["kind"] for m in facts.modules}
    feeds = next_consumers(by_depth(list(kinds), h, facts, param_level=False), kinds)
    out = []
    for j in columns(names, facts.modules_of_kind(BOUNDED)):
        if names[j] == last:
            continue
        if feeds.get(names[j]) == last and not first.get(names[j], 0.0) >= \
                th.saturation_fraction:
            continue  # final features that saturated as the classifier learned
        col = mat[:, j]
        high = np.nan_to_num(col, nan=0.0) >= th.saturation_fraction
        if high[-1] and high.mean() >= th.act_persist:
            out.append(Finding(
                f"{fmt(100 * col[-1])}% of the outputs of '{names[j]}' are saturated (at the "
                f"limits of the activation's range) at step {h.step}; median "
                f"{fmt(100 * nanmedian(col))}% over steps {steps[0]}..{steps[-1]}.", names[j],
                {"saturation_fraction": float(col[-1]), "median": nanmedian(col),
                 "records": [int(s) for s in steps]}, score=float(col[-1])))
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
