"""activation_scale: hidden activations are far from unit scale, or drift layer after layer.

Reads the ``activations`` instrument's per-module std. A hidden layer (the output layer is left
out: logits grow as a classifier gets confident) whose std stays below ``act_std_low`` or above
``act_std_high`` (10x outside the healthy ~[0.5, 2]) is reported; so is a monotone drift of the
std by ``act_drift`` across ``act_drift_layers`` or more consecutive weight layers (the signature
of an initialization gain that is too small or too large for the depth).
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import CONV, DROPOUT, LINEAR, SHAPE, WEIGHT_KINDS
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import by_depth, output_module
from instrument.store import schema
from instrument.store.schema import DKeys, Keys


def check(h, th, facts, state):
    if not h.has(Keys.ACT_STD) or h.count(Keys.ACT_STD) < th.act_records:
        return []
    steps, mat, names = h.layer(Keys.ACT_STD, th.act_records)
    last = output_module(h, facts)
    kinds = {m["name"]: m["kind"] for m in facts.modules}
    index = {n: j for j, n in enumerate(names)}
    out = []
    learned = False
    for name in by_depth(names, h, facts, param_level=False):
        learned = learned or kinds.get(name) in WEIGHT_KINDS
        # skip the output, pure reshapes and dropout, and anything before the first weight
        # layer: its scale is the input's (input_scale reports that)
        if name == last or not learned or kinds.get(name) in (DROPOUT, SHAPE):
            continue
        col = mat[:, index[name]]
        low = np.nan_to_num(col, nan=1.0) < th.act_std_low
        high = np.nan_to_num(col, nan=1.0) > th.act_std_high
        for bad, word in ((low, "small"), (high, "large")):
            if bad[-1] and bad.mean() >= th.act_persist:
                out.append(Finding(
                    f"Activations of '{name}' are far too {word}: std {fmt(col[-1])} at step "
                    f"{h.step} (median {fmt(nanmedian(col))} over steps {steps[0]}..{steps[-1]}; "
                    f"healthy is about 0.5..2).", name,
                    {"std": float(col[-1]), "median": nanmedian(col), "direction": word}))
        if out:
            return out  # the first layer that is off; later ones inherit its scale
    return _drift(h, th, facts, mat, names, last, kinds, steps)


def _drift(h, th, facts, mat, names, last, kinds, steps):
    layers = [n for n in by_depth(names, h, facts, param_level=False)
              if kinds.get(n) in (LINEAR, CONV) and n != last]
    if len(layers) < th.act_drift_layers:
        return []
    std = np.array([nanmedian(mat[:, names.index(n)]) for n in layers])
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        return []
    ratios = std[1:] / std[:-1]
    for sign in (1, -1):
        # longest run of consecutive layers moving the same way
        run_start, best = 0, None
        for i in range(len(ratios) + 1):
            if i == len(ratios) or not (np.sign(np.log(ratios[i])) == sign):
                span = (run_start, i)  # layers run_start..i
                total = std[i] / std[run_start]
                if i - run_start + 1 >= th.act_drift_layers and \
                        max(total, 1 / total) >= th.act_drift:
                    best = span
                run_start = i + 1
        if best is not None:
            a, b = best
            word = "grows" if sign > 0 else "shrinks"
            return [Finding(
                f"Activation std {word} layer after layer: from {fmt(std[a])} at '{layers[a]}' "
                f"to {fmt(std[b])} at '{layers[b]}' ({b - a + 1} layers, median over steps "
                f"{steps[0]}..{steps[-1]}).", layers[b],
                {"layers": layers[a:b + 1], "std": [float(v) for v in std[a:b + 1]],
                 "direction": word})]
    return []


RULE = Rule(
    code="activation_scale", severity=schema.WARNING,
    summary="hidden activation std is far outside ~[0.5, 2], or drifts layer after layer",
    suggestion=("Use an initialization matched to the activation (Kaiming/He for ReLU, Xavier "
                "for tanh), normalize the inputs, or add normalization layers (BatchNorm, "
                "LayerNorm) between the weight layers."),
    check=check, needs=("activations",), keys=(Keys.ACT_STD, DKeys.FORWARD_ORDER),
    windows=lambda th: {Keys.ACT_STD: th.act_records, DKeys.FORWARD_ORDER: 1},
    suppressed_by=("missing_zero_grad", "input_scale", "dead_units"))
