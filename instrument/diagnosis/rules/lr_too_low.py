"""lr_too_low: update/weight ratios stay far below 1e-3 in most layers, and the loss barely moves.

Over the last ``lr_low_window`` recorded steps: in at least ``lr_low_layer_fraction`` of the
weight matrices of every optimizer param group (a backbone trained slower than its head on
purpose stays quiet) the median update/weight ratio ||dw|| / ||w|| is below ``lr_low_update_ratio``
(healthy training sits around 1e-3), the smoothed loss changes by less than
``lr_low_loss_change`` between the first and the last quarter of the window, and it is still
above half of its initial value (a converged model also makes tiny steps). Quiet while the
learning rate rises (warm-up) or is below ``lr_low_schedule_fraction`` of its peak (the end of
a decay): small steps by design.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import finite, fmt, nanmedian
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import columns, loss_key, lr_fraction_of_peak, lr_warming_up
from instrument.store import schema
from instrument.store.schema import DKeys, Keys

EVERY = 10
"""Checked every this many records (the window is long; saves time on the writer thread)."""

PROGRESS = 0.5
"""The loss must still be above this fraction of its initial value (not converged)."""


def check(h, th, facts, state):
    n = th.lr_low_window
    count = h.count(Keys.UPDATE_RATIO)
    if not h.has(Keys.UPDATE_RATIO) or count < n or count % EVERY:
        return []
    if lr_warming_up(h) or lr_fraction_of_peak(h) < th.lr_low_schedule_fraction:
        return []
    steps, mat, names = h.layer(Keys.UPDATE_RATIO, n)
    groups = _groups(facts, names)
    med = nanmedian(mat, axis=0)
    fractions = []
    for cols in groups.values():
        m = med[cols]
        m = m[np.isfinite(m)]
        if len(m):
            fractions.append(float(np.mean(m < th.lr_low_update_ratio)))
    # every param group must be slow: a backbone trained 100x slower than its head on
    # purpose (discriminative learning rates) is not a mistake
    if not fractions or min(fractions) < th.lr_low_layer_fraction:
        return []
    low = min(fractions)
    med = med[np.isfinite(med)]
    key = loss_key(h)
    _, loss = h.scalar(key, n)
    first = finite(h.first(key))
    loss = finite(loss)
    if len(loss) < n // 2 or len(first) < 3:
        return []
    q = max(1, len(loss) // 4)
    a, b = np.median(loss[:q]), np.median(loss[-q:])
    start = float(np.median(first[:5]))
    change = abs(b - a) / max(abs(a), 1e-12)
    if change >= th.lr_low_loss_change or b < PROGRESS * start:
        return []
    return [Finding(
        f"Updates are tiny: the median update/weight ratio is below "
        f"{fmt(th.lr_low_update_ratio)} in {fmt(100 * low)}% of the weight matrices over steps "
        f"{steps[0]}..{steps[-1]} (overall median {fmt(float(np.median(med)))}, healthy ~1e-3), "
        f"and the loss moved by only {fmt(100 * change)}% ({fmt(a)} -> {fmt(b)}).", None,
        {"median_update_ratio": float(np.median(med)), "fraction_low": low,
         "loss_change": change, "window": [int(steps[0]), int(steps[-1])]})]


def _groups(facts, names) -> dict:
    """Columns of the weight matrices per optimizer param group (all parameters in one group
    when the run has no weight matrices or no group facts)."""
    group = {p["name"]: p.get("group") for p in facts.params}
    out: dict = {}
    for j in columns(names, facts.weight_matrices()):
        out.setdefault(group.get(names[j]), []).append(j)
    return out or {None: list(range(len(names)))}


RULE = Rule(
    code="lr_too_low", severity=schema.WARNING,
    summary="update/weight ratios stay far below 1e-3 in most layers and the loss barely moves",
    suggestion=("Raise the learning rate (try 10x; a learning-rate range test finds the "
                "largest stable value), and check that the loss is not scaled down and that "
                "weight decay is not cancelling the updates."),
    check=check, needs=("update", "weight_norm"),
    keys=(Keys.UPDATE_RATIO, Keys.LOSS, "lr/*"),
    windows=lambda th: {Keys.UPDATE_RATIO: th.lr_low_window, Keys.LOSS: th.lr_low_window,
                        DKeys.CRIT_LOSS: th.lr_low_window})
