"""nonfinite: NaN/Inf in the loss, activations, gradients or parameters, with its origin.

The ``nonfinite`` instrument detects this at source (it sees the first module in forward order
whose output went non-finite) and stores the event itself; the engine reports those events
(live: console; on a saved run: the report) without storing them twice. This rule covers runs
recorded with that instrument switched off: it reads the recorded series instead.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import loss_key
from instrument.store import schema
from instrument.store.schema import Keys


def _first_bad(h, key, bad):
    values = h.now(key)
    if values is None:
        return None
    names = h.names(key)
    idx = [i for i, v in enumerate(values) if bad(v)]
    return (names[idx[0]], len(idx)) if idx else None


def check(h, th, facts, state):
    if facts.has("nonfinite"):
        return []  # reported at source; the engine passes those events through
    out = []
    key = loss_key(h)
    loss = h.now(key)
    found = {
        "loss": (None, 1) if loss is not None and not np.isfinite(loss) else None,
        "activation": _first_bad(h, Keys.ACT_NONFINITE, lambda v: v > 0),
        "parameter": _first_bad(h, Keys.WEIGHT_NORM, lambda v: not np.isfinite(v)),
    }
    for kind, hit in found.items():
        was = state.get(kind, False)
        state[kind] = hit is not None
        if hit is None or was:
            continue
        layer, count = hit
        where = f" first at '{layer}' ({count} affected)" if layer else ""
        text = f"the loss is {loss}" if kind == "loss" else f"non-finite {kind} values{where}"
        out.append(Finding(f"Non-finite values at step {h.step}: {text}.", layer,
                           {"tensor": kind, "count": count}))
    return out


RULE = Rule(
    code=schema.NONFINITE, severity=schema.CRITICAL,
    summary="NaN/Inf appears in the loss, activations, gradients or parameters",
    suggestion=("Look at the named module's inputs and weights at this step: lower the learning "
                "rate, add gradient clipping or warm-up, check the data for NaN/Inf, and guard "
                "log/sqrt/division against zero or negative arguments."),
    check=check, keys=(Keys.LOSS, Keys.ACT_NONFINITE, Keys.WEIGHT_NORM), after_nonfinite=True,
    windows=lambda th: {Keys.ACT_NONFINITE: 1, Keys.WEIGHT_NORM: 1})
