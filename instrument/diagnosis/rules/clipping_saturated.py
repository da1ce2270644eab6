"""clipping_saturated: gradient clipping is active on most steps.

The gradient norm is recorded after clipping, so clipped steps all sit at the same ceiling (the
clip value). When that happens on more than ``clip_fraction`` of the last ``clip_window``
records, clipping no longer trims outliers but rescales nearly every step: the tuning playbook
calls more than 50 % "extremely aggressive", and the real gradient norm (and any explosion) is
hidden behind the ceiling.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import Keys


def check(h, th, facts, state):
    key = Keys.GRAD_NORM_TOTAL
    if not h.has(key) or h.count(key) < th.clip_window:
        return []
    steps, g = h.scalar(key, th.clip_window)
    g = g[np.isfinite(g)]
    if len(g) < th.clip_window:
        return []
    ceiling = float(g.max())
    if ceiling <= 0:
        return []
    at = np.abs(g - ceiling) <= th.clip_tolerance * ceiling
    frac = float(at.mean())
    if frac < th.clip_fraction or not at[-1]:
        return []
    return [Finding(
        f"The gradient norm sits at the same ceiling {fmt(ceiling)} in {fmt(100 * frac)}% of the "
        f"last {len(g)} recorded steps (up to step {h.step}): clipping rescales nearly every "
        f"step, and the true gradient norm is hidden.", None,
        {"ceiling": ceiling, "fraction": frac, "window": [int(steps[0]), int(steps[-1])]})]


RULE = Rule(
    code="clipping_saturated", severity=schema.INFO,
    summary="the (clipped) gradient norm sits at the clip value on most steps",
    suggestion=("Lower the learning rate or raise the clip threshold to about the 90th "
                "percentile of the unclipped gradient norms; log the norm returned by "
                "clip_grad_norm_ to see the real one."),
    check=check, needs=("grad_norm",), keys=(Keys.GRAD_NORM_TOTAL,),
    windows=lambda th: {Keys.GRAD_NORM_TOTAL: th.clip_window})
