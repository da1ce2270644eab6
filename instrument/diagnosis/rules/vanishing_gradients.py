"""vanishing_gradients: the early layers' gradients are orders of magnitude below the last ones'.

Compares the RMS gradient (gradient norm / sqrt(number of elements), so that layer sizes do not
matter) of the first quarter of the weight matrices with that of the last quarter, in forward
order; the median of the ratio over ``vanish_window`` recorded steps must stay below
``vanish_ratio``. Embedding tables are left out (a batch touches only some rows).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import by_depth
from instrument.store import schema
from instrument.store.schema import DKeys, Keys


def check(h, th, facts, state):
    g = h.now(Keys.GRAD_NORM)
    if g is None:
        return []
    names = h.names(Keys.GRAD_NORM)
    index = {name: j for j, name in enumerate(names)}
    mats = [m for m in by_depth(facts.weight_matrices(), h, facts, param_level=True)
            if m in index]
    if len(mats) < th.vanish_min_layers:
        return []
    size = {p["name"]: max(1, math.prod(p["shape"])) for p in facts.params}
    rms = np.array([g[index[m]] / math.sqrt(size[m]) for m in mats])
    q = max(1, len(mats) // 4)
    early, late = nanmedian(rms[:q]), nanmedian(rms[-q:])
    # exactly zero early gradients are blocked (dead units, a cut graph), not vanishing:
    # other rules report those. One ratio per step, kept for the window (cheap per step).
    ratio = early / late if late > 0 and early > 0 else np.nan
    window = state.setdefault("ratios", deque(maxlen=th.vanish_window))
    window.append((h.step, ratio))
    if len(window) < th.vanish_window:
        return []
    med = nanmedian([r for _, r in window])
    if not np.isfinite(med) or med >= th.vanish_ratio:
        return []
    return [Finding(
        f"Gradients vanish towards the input: the RMS gradient of the first weight layer(s) "
        f"({', '.join(mats[:q])}) is {fmt(med)} times that of the last ({', '.join(mats[-q:])}) "
        f"in the median over steps {window[0][0]}..{window[-1][0]}.", mats[0],
        {"ratio": med, "early": mats[:q], "late": mats[-q:]})]


RULE = Rule(
    code="vanishing_gradients", severity=schema.WARNING,
    summary="the early layers' gradient norms are orders of magnitude below the last layers'",
    suggestion=("Use ReLU-family activations instead of sigmoid/tanh in deep stacks, "
                "initialization matched to the activation (Kaiming/He), normalization layers, "
                "or residual connections."),
    check=check, needs=("grad_norm",), keys=(Keys.GRAD_NORM, DKeys.FORWARD_ORDER),
    per_layer=False, windows=lambda th: {Keys.GRAD_NORM: 1, DKeys.FORWARD_ORDER: 1},
    suppressed_by=("missing_zero_grad",))
