"""activation_scale: hidden activations are far from unit scale, or drift layer after layer.

Reads the ``activations`` instrument's per-module std. A hidden layer (the output layer is left
out: logits grow as a classifier gets confident) whose std stays below ``act_std_low`` or above
``act_std_high`` (10x outside the healthy ~[0.5, 2]) is reported; so is a monotone drift of the
std by ``act_drift`` across ``act_drift_layers`` or more consecutive weight layers (the signature
of an initialization gain that is too small or too large for the depth).

Two kinds of output are not judged "too small": an embedding's (a lookup table's scale is its
initialization, 0.02 by design in GPT-2 and BERT) and that of a module whose output goes next
into a normalization layer (LayerNorm/BatchNorm rescale it; GPT-2's scaled residual
projections are small on purpose). "Next" follows the recorded forward order, skipping
dropout, reshapes and embeddings (which read token ids, not the activation).

A scale that is off is told apart by its history: off at the first activation record, or
changed by less than ``act_origin_factor`` since, means the initialization (or the inputs) set
it; within bounds at first and ``act_origin_factor`` times larger (smaller) later means it grew
(shrank) while training, which points at the learning rate or weight decay instead.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import (
    BATCHNORM,
    CONV,
    DROPOUT,
    EMBEDDING,
    LINEAR,
    NORM,
    SHAPE,
    WEIGHT_KINDS,
)
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import by_depth, next_consumers, output_module
from instrument.store import schema
from instrument.store.schema import DKeys, Keys

PASS_THROUGH = (DROPOUT, SHAPE, EMBEDDING)
"""Kinds skipped when looking for the module that consumes an output next."""

GREW_ADVICE = ("The activations grew while training: lower the learning rate (or add warm-up), "
               "add or raise weight decay, and clip gradients; the update/weight ratios on the "
               "dashboard show which layers move too fast.")
SHRANK_ADVICE = ("The activations shrank while training: check weight decay (too strong "
                 "decay shrinks the weights towards zero) and the learning rate.")


def check(h, th, facts, state):
    if not h.has(Keys.ACT_STD):
        return []
    _remember_first(h, state)
    if h.count(Keys.ACT_STD) < th.act_records:
        return []
    steps, mat, names = h.layer(Keys.ACT_STD, th.act_records)
    last = output_module(h, facts)
    kinds = {m["name"]: m["kind"] for m in facts.modules}
    order = by_depth(names, h, facts, param_level=False)
    normalized = feeds_normalization(order, kinds)
    index = {n: j for j, n in enumerate(names)}
    out = []
    learned = False
    for name in order:
        learned = learned or kinds.get(name) in WEIGHT_KINDS
        # skip the output, pure reshapes and dropout, and anything before the first weight
        # layer: its scale is the input's (input_scale reports that)
        if name == last or not learned or kinds.get(name) in (DROPOUT, SHAPE):
            continue
        col = mat[:, index[name]]
        low = np.nan_to_num(col, nan=1.0) < th.act_std_low
        high = np.nan_to_num(col, nan=1.0) > th.act_std_high
        for bad, word in ((low, "small"), (high, "large")):
            if word == "small" and (kinds.get(name) == EMBEDDING or name in normalized):
                continue  # an embedding's scale is its init; a normalization rescales it
            if bad[-1] and bad.mean() >= th.act_persist:
                out.append(_finding(h, th, state, name, col, steps, word))
        if out:
            return out  # the first layer that is off; later ones inherit its scale
    return _drift(h, th, facts, mat, names, last, kinds, steps)


def feeds_normalization(order: list, kinds: dict) -> set:
    """Modules (in forward ``order``) whose output the next consuming module normalizes."""
    return {name for name, nxt in next_consumers(order, kinds, PASS_THROUGH).items()
            if kinds.get(nxt) in (NORM, BATCHNORM)}


def _remember_first(h, state) -> None:
    """Keep each module's std at its first activation record (bounded: one per module)."""
    first = state.setdefault("first", {})
    value = h.now(Keys.ACT_STD)
    for name, v in zip(h.names(Keys.ACT_STD), value):
        if name not in first and np.isfinite(v):
            first[name] = (h.step, float(v))


def _finding(h, th, state, name, col, steps, word) -> Finding:
    start_step, start = state["first"].get(name, (None, float("nan")))
    bound = th.act_std_low if word == "small" else th.act_std_high
    moved = col[-1] / start if np.isfinite(start) and start > 0 else 1.0
    moved = moved if word == "large" else 1 / max(moved, 1e-30)
    # off at the first record, or hardly moved since: the initialization (or inputs) set it
    started_off = (not np.isfinite(start) or (start < bound if word == "small" else
                                              start > bound) or moved < th.act_origin_factor)
    msg = (f"Activations of '{name}' are far too {word}: std {fmt(col[-1])} at step {h.step} "
           f"(median {fmt(nanmedian(col))} over steps {steps[0]}..{steps[-1]}; healthy is "
           f"about 0.5..2)")
    ev = {"std": float(col[-1]), "median": nanmedian(col), "direction": word,
          "first_std": start, "first_step": start_step}
    if started_off:
        ev["origin"] = "initialization"
        return Finding(msg + f", and {fmt(start)} at the first record (step {start_step}): the "
                       f"initialization or the inputs set this scale.",
                       name, ev, score=abs(float(np.log(max(col[-1], 1e-30)))))
    ev["origin"] = "training"
    verb = "grew" if word == "large" else "shrank"
    return Finding(msg + f"; it {verb} during training from {fmt(start)} at step {start_step}.",
                   name, ev, suggestion=GREW_ADVICE if word == "large" else SHRANK_ADVICE,
                   score=abs(float(np.log(max(col[-1], 1e-30)))))


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
    suppressed_by=("missing_zero_grad", "input_scale", "dead_units", "lr_too_high"))
