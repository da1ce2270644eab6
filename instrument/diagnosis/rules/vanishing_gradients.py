"""vanishing_gradients: the early layers' gradients are orders of magnitude below the last ones'.

Compares the RMS gradient (gradient norm / sqrt(number of elements), so that layer sizes do not
matter) of the first quarter of the weight matrices with that of the last quarter, in forward
order; the median of the ratio over ``vanish_window`` recorded steps must stay below
``vanish_ratio``. Embedding tables are left out (a batch touches only some rows).
"""

from __future__ import annotations

import math

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import by_depth
from instrument.store import schema
from instrument.store.schema import Keys


def check(h, th, facts, state):
    n = th.vanish_window
    if not h.has(Keys.GRAD_NORM) or h.count(Keys.GRAD_NORM) < n:
        return []
    steps, g, names = h.layer(Keys.GRAD_NORM, n)
    index = {name: j for j, name in enumerate(names)}
    mats = [m for m in by_depth(facts.weight_matrices(), h, facts, param_level=True)
            if m in index]
    if len(mats) < th.vanish_min_layers:
        return []
    size = {p["name"]: max(1, math.prod(p["shape"])) for p in facts.params}
    rms = np.stack([g[:, index[m]] / math.sqrt(size[m]) for m in mats], axis=1)
    q = max(1, len(mats) // 4)
    early = nanmedian(rms[:, :q], axis=1)
    late = nanmedian(rms[:, -q:], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # exactly zero early gradients are blocked (dead units, a cut graph), not vanishing:
        # other rules report those
        ratio = nanmedian(np.where((late > 0) & (early > 0), early / late, np.nan))
    if not np.isfinite(ratio) or ratio >= th.vanish_ratio:
        return []
    return [Finding(
        f"Gradients vanish towards the input: the RMS gradient of the first weight layer(s) "
        f"({', '.join(mats[:q])}) is {fmt(ratio)} times that of the last ({', '.join(mats[-q:])}) "
        f"in the median over steps {steps[0]}..{steps[-1]}.", mats[0],
        {"ratio": ratio, "early": mats[:q], "late": mats[-q:]})]


RULE = Rule(
    code="vanishing_gradients", severity=schema.WARNING,
    summary="the early layers' gradient norms are orders of magnitude below the last layers'",
    suggestion=("Use ReLU-family activations instead of sigmoid/tanh in deep stacks, "
                "initialization matched to the activation (Kaiming/He), normalization layers, "
                "or residual connections."),
    check=check, needs=("grad_norm",), keys=(Keys.GRAD_NORM,), per_layer=False)
