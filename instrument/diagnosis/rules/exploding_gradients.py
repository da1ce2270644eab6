"""exploding_gradients: the gradient norm grows by orders of magnitude, or sits far above its
running median.

Three signatures: a sustained level shift (every one of the last ``explode_recent`` records
``explode_factor`` times the running median: divergence), repeated huge spikes (the classic
recurrent-network symptom), and growth by orders of magnitude since the start. Single spikes of
10-50x the median are normal near convergence and stay quiet. Judged only after
``explode_min_baseline`` records: early training moves the gradient norm by 10x and more as the
network leaves its initialization.

The global gradient norm is taken at the optimizer step, i.e. *after* any clipping the loop
does: with ``clip_grad_norm_`` the recorded norm cannot exceed the clip value, so an explosion
under clipping shows up as the ``clipping_saturated`` finding instead.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import finite, fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import Keys

SMOOTH = 5
"""Records in the rolling median for the growth criterion (robust to single spikes)."""


def check(h, th, facts, state):
    key = Keys.GRAD_NORM_TOTAL
    if not h.has(key):
        return []
    steps, g = h.scalar(key)
    count = h.count(key)
    settled = th.explode_min_baseline  # records before the norm counts as settled
    if settled - SMOOTH < count <= settled and np.isfinite(g[-1]):
        # the reference for the growth criterion: the records just before judging starts
        state.setdefault("start", []).append(float(g[-1]))
    if count < settled + th.explode_recent:
        return []  # early training moves the norm by 10x and more: not an explosion
    out = []
    r, w = th.explode_recent, th.explode_window
    prev = finite(g[-(r + w):-r])
    base = np.median(prev) if len(prev) else np.nan
    above = g[-r:] > th.explode_factor * base
    if base > 0 and above[-1] and above.sum() >= th.explode_steps:
        out.append(_finding(h, steps, g, f"sits {fmt(g[-1] / base)} times above its running "
                            f"median {fmt(base)} (over the previous {len(prev)} records), at "
                            f"{int(above.sum())} records in a row",
                            {"grad_norm": float(g[-1]), "running_median": float(base)}))
    window = g[-w:]
    spikes = window > th.explode_spike_factor * np.median(finite(window))
    if spikes[-1] and spikes.sum() >= th.explode_spikes:
        out.append(_finding(h, steps, g, f"spikes to {fmt(g[-1] / np.median(finite(window)))} "
                            f"times its median over the last {len(window)} records "
                            f"({int(spikes.sum())} such spikes)",
                            {"grad_norm": float(g[-1]), "spikes": int(spikes.sum()),
                             "median": float(np.median(finite(window)))}))
    ref = finite(np.asarray(state.get("start", [])))
    start = float(np.median(ref)) if len(ref) else np.nan
    now = float(np.median(g[-SMOOTH:]))
    if start > 0 and now >= th.explode_growth * start:
        out.append(_finding(h, steps, g, f"grew {fmt(now / start)}-fold from {fmt(start)} at "
                            f"step {settled} (rolling median of {SMOOTH})",
                            {"grad_norm": float(g[-1]), "start": start}))
    return out[:1]


def _finding(h, steps, g, what, evidence):
    top = _top_layer(h)
    where = f"; largest in '{top}'" if top else ""
    return Finding(f"The gradient norm {fmt(g[-1])} at step {h.step} {what}{where}.", top,
                   {**evidence, "steps": [int(s) for s in steps[-5:]]})


def _top_layer(h):
    values = h.now(Keys.GRAD_NORM)
    if values is None or not np.isfinite(values).any():
        return None
    names = h.names(Keys.GRAD_NORM)
    return names[int(np.nanargmax(np.where(np.isfinite(values), values, -1)))]


RULE = Rule(
    code="exploding_gradients", severity=schema.WARNING,
    summary="the gradient norm grows by orders of magnitude, or sits far above its running median",
    suggestion=("Lower the learning rate or add warm-up, clip gradients "
                "(torch.nn.utils.clip_grad_norm_ at about the 90th percentile of the norms), "
                "and check for a missing optimizer.zero_grad() or unnormalized inputs."),
    check=check, needs=("grad_norm",), keys=(Keys.GRAD_NORM_TOTAL, Keys.GRAD_NORM),
    suppressed_by=("missing_zero_grad",), per_layer=False,
    windows=lambda th: {Keys.GRAD_NORM_TOTAL: th.explode_window + th.explode_recent,
                        Keys.GRAD_NORM: 1})
