"""Helpers several rules share: which loss to read, depth order, update-ratio summaries."""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.history import History, nanmedian
from instrument.store.schema import DKeys, Keys


def loss_key(h: History) -> str:
    """The loss the loop logs (``monitor.log(loss=...)``), else the criterion's own."""
    return Keys.LOSS if h.count(Keys.LOSS) else DKeys.CRIT_LOSS


def module_rank(h: History, facts) -> dict:
    """Module name -> position in the forward pass (last recorded ``forward_order``), falling
    back to model order for modules never seen called."""
    rank = {m["name"]: i for i, m in enumerate(facts.modules)}
    _, mat, names = h.layer(DKeys.FORWARD_ORDER, 1)
    if len(mat):
        n = len(rank)
        for name, r in zip(names, mat[-1]):
            rank[name] = float(r) if np.isfinite(r) else n + rank.get(name, 0)
    return rank


def by_depth(names: list, h: History, facts, param_level: bool) -> list:
    """``names`` (parameters or modules) sorted from the input side to the output side."""
    rank = module_rank(h, facts)
    if param_level:
        owner = {p["name"]: p["module"] for p in facts.params}
        model_pos = {p["name"]: i for i, p in enumerate(facts.params)}
        return sorted(names, key=lambda n: (rank.get(owner.get(n), 1e9), model_pos.get(n, 0)))
    return sorted(names, key=lambda n: rank.get(n, 1e9))


def output_module(h: History, facts):
    """The leaf module called last in the forward pass (the model's output layer)."""
    names = [m["name"] for m in facts.modules]
    return by_depth(names, h, facts, param_level=False)[-1] if names else None


def columns(names: list, wanted) -> list:
    """Indices in ``names`` of the names in ``wanted`` (in ``names`` order)."""
    wanted = set(wanted)
    return [i for i, n in enumerate(names) if n in wanted]


def weight_ratio_median(h: History, facts, n: int, exclude=()) -> tuple:
    """Per recorded step, the median update/weight ratio over the weight matrices (minus
    ``exclude``): ``(steps, medians)`` for the last ``n`` records. Falls back to all parameters
    when the run has no weight matrices (e.g. a model of only biases or scalars)."""
    steps, mat, names = h.layer(Keys.UPDATE_RATIO, n)
    if not len(steps):
        return steps, np.zeros(0)
    wanted = [m for m in facts.weight_matrices() if m not in set(exclude)]
    cols = columns(names, wanted) or list(range(len(names)))
    sub = mat[:, cols]
    sub = np.where(np.isfinite(sub), sub, np.nan)  # a zero weight (zero-init) gives inf
    return steps, nanmedian(sub, axis=1)


LR_PREFIX = Keys.LR + "/"
WARMUP_LOOKBACK = 10
"""Records compared to tell whether the learning rate is still rising (warm-up)."""


def lr_warming_up(h: History) -> bool:
    """True if some param group's learning rate rose over the last few records."""
    for key in h.scalar_keys(LR_PREFIX):
        _, lr = h.scalar(key, WARMUP_LOOKBACK)
        if len(lr) >= 2 and lr[-1] > lr[0] * (1 + 1e-9):
            return True
    return False


def lr_fraction_of_peak(h: History) -> float:
    """The smallest, over param groups, of the current learning rate divided by its peak in
    the kept window (1.0 without learning-rate records)."""
    out = 1.0
    for key in h.scalar_keys(LR_PREFIX):
        _, lr = h.scalar(key)
        lr = lr[np.isfinite(lr)]
        if len(lr) and lr.max() > 0:
            out = min(out, float(lr[-1] / lr.max()))
    return out
