"""lr_too_high's criterion for a too-high learning rate that does not diverge.

Under adaptive optimizers (Adam, AdamW) each step moves every weight by about the learning
rate, whatever the gradient's size. At too high a rate the run need not diverge: the weights
grow until the update/weight ratio is merely large, and the loss plateaus above where a lower
rate gets (nanoGPT at 100x its learning rate: total weight norm 32 -> 179, ratios 0.015-0.045
after the warm-up, loss stuck at 3.0 against 2.23). The evidence, all over the last
``lr_growth_window`` records:

* *large steps*: the median update/weight ratio of the weight matrices is above
  ``lr_growth_update_ratio`` (10x the healthy ~1e-3) in ``lr_high_fraction`` of the records;
* *growing weights*: the total norm of the weight matrices is ``lr_growth_factor`` times what
  it was at the first record and still grew by ``lr_growth_recent`` over the window;
* *no progress*: the loss's median over the last quarter of the window is not below that of
  the first quarter by more than ``lr_low_loss_change`` (a plateau, or worse).

Healthy training with an adaptive optimizer has large ratios too (small models sit at
1e-2..3e-2) but its weights grow by a small factor, and until it converges its loss falls.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rules.common import loss_key
from instrument.store.schema import Keys

EVERY = 10
"""Checked every this many records (the window is long)."""


def weight_total(h, facts, state):
    """Track the total norm of the weight matrices that did not start at zero (per record)."""
    if not h.has(Keys.WEIGHT_NORM):
        return
    names = h.names(Keys.WEIGHT_NORM)
    if "growth_cols" not in state:
        wanted = set(facts.weight_matrices()) or set(names)
        first = h.now(Keys.WEIGHT_NORM)
        state["growth_cols"] = [j for j, n in enumerate(names)
                                if n in wanted and np.isfinite(first[j]) and first[j] > 0]
    w = h.now(Keys.WEIGHT_NORM)
    cols = [j for j in state["growth_cols"] if j < len(w)]
    if not cols:
        return
    total = float(np.sqrt(np.sum(np.square(w[cols]))))
    state.setdefault("growth_first", total)
    return total


def check_growth(h, th, facts, state, med):
    """The finding (a list of at most one), or []."""
    total = weight_total(h, facts, state)
    n = th.lr_growth_window
    if total is None:
        return []
    norms = state.setdefault("growth_norms", deque(maxlen=n))
    norms.append(total)
    ratios = state.setdefault("growth_ratios", deque(maxlen=n))
    _, m = med
    if h.has(Keys.UPDATE_RATIO) and len(m):
        ratios.append(float(m[-1]))
    if len(norms) < n or len(ratios) < n or h.count(Keys.WEIGHT_NORM) % EVERY:
        return []
    r = np.asarray(ratios)
    high = np.mean(r > th.lr_growth_update_ratio)
    growth = total / state["growth_first"]
    recent = total / norms[0]
    if high < th.lr_high_fraction or growth < th.lr_growth_factor or \
            recent < 1 + th.lr_growth_recent:
        return []
    _, loss = h.scalar(loss_key(h), n)
    loss = loss[np.isfinite(loss)]
    if len(loss) < n // 2:
        return []
    q = max(1, len(loss) // 4)
    a, b = float(np.median(loss[:q])), float(np.median(loss[-q:]))
    if b < a * (1 - th.lr_low_loss_change):
        return []  # still learning
    return [Finding(
        f"The learning rate looks too high although the loss does not diverge: over the last "
        f"{n} steps the median update/weight ratio was above {fmt(th.lr_growth_update_ratio)} "
        f"in {fmt(100 * high)}% of them (median {fmt(float(np.median(r)))}; healthy ~1e-3), "
        f"the weights kept growing (total norm {fmt(state['growth_first'])} at the start, "
        f"{fmt(total)} at step {h.step}: {fmt(growth)}x, {fmt(100 * (recent - 1))}% over the "
        f"window) and the loss stopped improving ({fmt(a)} -> {fmt(b)}). Adaptive optimizers "
        f"move each weight by about the learning rate: too high a rate inflates the weights "
        f"and leaves the loss on a plateau instead of diverging.", None,
        {"median_update_ratio": float(np.median(r)), "fraction_high": float(high),
         "weight_norm_start": state["growth_first"], "weight_norm": total,
         "weight_growth": growth, "recent_growth": recent, "loss_first_quarter": a,
         "loss_last_quarter": b, "criterion": "growth"})]
