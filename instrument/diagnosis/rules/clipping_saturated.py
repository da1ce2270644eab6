"""clipping_saturated: gradient clipping is active on most steps.

``grad_norm/total`` is the norm after clipping; ``grad_norm/total_before_clip`` is recorded on
the steps where clipping changed the gradient. When clipping rescales more than
``clip_fraction`` of the last ``clip_window`` steps, it no longer trims outliers but rescales
nearly every step: the tuning playbook calls more than 50 % "extremely aggressive", and the
real gradient norm (and any explosion) is hidden behind the ceiling.

Where the before-clip norm is not available (a run recorded before it existed), clipped steps
are recognised by the clipped norm sitting at the same ceiling (the clip value).
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
    finite = np.isfinite(g)
    steps, g = steps[finite], g[finite]
    if len(g) < th.clip_window:
        return []
    if h.count(Keys.GRAD_NORM_TOTAL_BEFORE_CLIP):
        return _from_before_clip(h, th, steps, g)
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


def _from_before_clip(h, th, steps, after):
    """Clipped steps are those whose before-clip norm is recorded and above the clipped one."""
    bsteps, before = h.scalar(Keys.GRAD_NORM_TOTAL_BEFORE_CLIP, th.clip_window)
    by_step = dict(zip(bsteps.tolist(), before.tolist()))
    real = np.array([by_step.get(s, np.nan) for s in steps.tolist()])
    clipped = np.isfinite(real) & (real > after * (1 + th.clip_tolerance))
    frac = float(clipped.mean())
    if frac < th.clip_fraction or not clipped[-1]:
        return []
    ceiling = float(np.median(after[clipped]))
    return [Finding(
        f"Gradient clipping rescaled {fmt(100 * frac)}% of the last {len(after)} steps (up to "
        f"step {h.step}): the gradient norm before clipping has median "
        f"{fmt(float(np.median(real[clipped])))} against the clip value {fmt(ceiling)}, so "
        "clipping rescales nearly every step and the true gradient norm is hidden.", None,
        {"ceiling": ceiling, "fraction": frac, "window": [int(steps[0]), int(steps[-1])],
         "median_before_clip": float(np.median(real[clipped]))})]


RULE = Rule(
    code="clipping_saturated", severity=schema.INFO,
    summary="the (clipped) gradient norm sits at the clip value on most steps",
    suggestion=("Lower the learning rate or raise the clip threshold to about the 90th "
                "percentile of the unclipped gradient norms (grad_norm/total_before_clip)."),
    check=check, needs=("grad_norm",),
    keys=(Keys.GRAD_NORM_TOTAL, Keys.GRAD_NORM_TOTAL_BEFORE_CLIP),
    windows=lambda th: {Keys.GRAD_NORM_TOTAL: th.clip_window,
                        Keys.GRAD_NORM_TOTAL_BEFORE_CLIP: th.clip_window})
