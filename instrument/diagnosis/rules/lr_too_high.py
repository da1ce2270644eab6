"""lr_too_high: the loss diverges, or update/weight ratios sit far above 1e-3.

Meant to fire *before* the NaN arrives. Any of:

* *extreme steps*: the median update/weight ratio of the weight matrices is above
  ``lr_extreme_update_ratio`` (each step changes the weights by more than their own size) at
  ``lr_extreme_steps`` records in a row;
* *large steps*: that median is above ``lr_high_update_ratio`` (100x the healthy ~1e-3) in
  ``lr_high_fraction`` of the last ``lr_high_window`` records;
* *early divergence*: the loss rose at ``loss_rise_steps`` records in a row (one less when the
  update ratio is above ``lr_high_update_ratio`` meanwhile) to more than ``loss_rise_factor``
  times its initial value; once ``loss_noise_min`` losses precede the rise, each loss of the
  rise must also be ``loss_rise_noise`` sigmas above their median (sigma: 1.4826 MAD of the
  last ``loss_noise_records`` of them, of their logarithms when the losses are positive:
  mini-batch noise is multiplicative). A model that starts at a low, noisy loss (fine-tuning,
  resuming) doubles it by chance, and bad batches are spikes, not a divergence;
* *jump*: right after an update whose median update/weight ratio is above
  ``lr_high_update_ratio``, the loss is more than ``loss_jump_factor`` times the median of the
  (up to ``loss_noise_records``) losses before it, and above their noise (as for early
  divergence): a too-high learning rate wrecking a trained model in one step;
* *later divergence*: the smoothed loss gave back ``loss_regain_fraction`` of the progress made
  since the start (once that progress is at least ``loss_regain_min_progress`` of the initial
  loss), for ``loss_regain_window`` records in a row. Progress and rise must both exceed
  ``loss_regain_noise`` standard errors of the rolling median (sigma from the MAD of the last
  ``loss_regain_noise_records`` losses): the minimum of a noisy rolling median is low by chance,
  and a loss wandering on a noisy plateau (small batches near convergence, fine-tuning) gives
  back "progress" that was never made.

Not reported while gradients are stale (``missing_zero_grad`` explains the divergence then).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import FIRST_VALUES, finite, fmt
from instrument.diagnosis.rule import Rule
from instrument.diagnosis.rules.common import loss_key, weight_ratio_median
from instrument.store import schema
from instrument.store.schema import DKeys, Keys


def check(h, th, facts, state):
    med = _ratio_median(h, th, facts, state)
    # all three run every step (the divergence tracker keeps state), the first one reports
    return (_ratios(h, th, med) + _fast_rise(h, th, med) + _jump(h, th, med) +
            _regain(h, th, state))[:1]


def _ratio_median(h, th, facts, state):
    """``(steps, median update ratio of the weight matrices)`` for the recent records; one
    median per step, kept in ``state`` (cheaper than re-reading the window every step)."""
    n = max(th.lr_high_window, th.lr_extreme_steps, th.loss_rise_steps)
    kept = state.setdefault("medians", deque(maxlen=n))
    if "zero_init" not in state and h.has(Keys.WEIGHT_NORM):
        w = h.now(Keys.WEIGHT_NORM)
        state["zero_init"] = [name for name, v in zip(h.names(Keys.WEIGHT_NORM), w) if v == 0]
    if h.has(Keys.UPDATE_RATIO):
        skip = state.get("zero_init", ()) if h.count(Keys.UPDATE_RATIO) <= \
            th.zero_init_records else ()
        steps, med = weight_ratio_median(h, facts, 1, exclude=skip)
        kept.append((h.step, float(med[-1])))
    return (np.array([s for s, _ in kept], dtype=np.int64),
            np.array([m for _, m in kept], dtype=np.float64))


def _ratios(h, th, med):
    steps, med = med
    if not h.has(Keys.UPDATE_RATIO) or not len(med) or not np.isfinite(med[-1]):
        return []
    ev = {"median_update_ratio": float(med[-1]), "steps": [int(s) for s in steps[-5:]]}
    recent = med[-th.lr_extreme_steps:]
    if len(recent) == th.lr_extreme_steps and np.all(recent > th.lr_extreme_update_ratio):
        return [Finding(
            f"Each step moves the weights by about their own size: the median update/weight "
            f"ratio of the weight matrices is {fmt(med[-1])} at step {h.step} ({len(recent)} "
            f"steps in a row above {fmt(th.lr_extreme_update_ratio)}; healthy is ~1e-3).",
            None, ev)]
    window = med[-th.lr_high_window:]
    high = window > th.lr_high_update_ratio
    if len(window) == th.lr_high_window and high[-1] and high.mean() >= th.lr_high_fraction:
        return [Finding(
            f"Updates are far too large: the median update/weight ratio of the weight matrices "
            f"is {fmt(med[-1])} at step {h.step}, above {fmt(th.lr_high_update_ratio)} in "
            f"{int(high.sum())} of the last {len(window)} steps (healthy is ~1e-3).", None, ev)]
    return []


def _fast_rise(h, th, med):
    key = loss_key(h)
    if not h.has(key):
        return []
    first = finite(h.first(key))
    steps, loss = h.scalar(key, th.loss_rise_steps + 1)
    if len(first) < 1 or len(loss) < 2 or not np.all(np.isfinite(loss)):
        return []
    start = float(first[0])  # the loss before any update: later ones may already diverge
    rises = 0
    for a, b in zip(loss[::-1][1:], loss[::-1][:-1]):  # count rises back from the newest
        if b <= a:
            break
        rises += 1
    rsteps, ratio = med
    big = len(ratio) > 0 and np.all(ratio[-rises:] > th.lr_high_update_ratio) if rises else False
    need = th.loss_rise_steps - 1 if big else th.loss_rise_steps
    if start <= 0 or rises < max(need, 1) or loss[-1] <= th.loss_rise_factor * start:
        return []
    _, before = h.scalar(key, th.loss_noise_records + rises)
    before = before[:len(before) - rises]  # up to the rise's first value
    if len(before) >= th.loss_noise_min and np.all(np.isfinite(before)):
        if not above_noise(loss[len(loss) - need:], before, th.loss_rise_noise):
            return []  # spikes of a noisy loss, not a divergence
    why = " with update/weight ratios above " + fmt(th.lr_high_update_ratio) if big else ""
    return [Finding(
        f"The loss is diverging: it rose at {rises} steps in a row{why} to {fmt(loss[-1])} at "
        f"step {h.step}, {fmt(loss[-1] / start)} times its initial {fmt(start)}.", None,
        {"loss": [float(v) for v in loss[-rises - 1:]], "initial": start,
         "steps": [int(s) for s in steps[-rises - 1:]]})]


def _jump(h, th, med):
    """One large update, and the loss is many times what it was (fine-tuning at too high a
    learning rate wrecks the model in its first step)."""
    key = loss_key(h)
    _, ratio = med
    if not h.has(key) or len(ratio) < 1:
        return []
    step_ratio = float(np.max(ratio[-2:]))  # the update before this loss (or at it)
    steps, loss = h.scalar(key, th.loss_noise_records + 1)
    if len(loss) < 2 or not np.all(np.isfinite(loss)) or not step_ratio > th.lr_high_update_ratio:
        return []
    before = loss[:-1]
    ref = float(np.median(before))
    if ref <= 0 or loss[-1] <= th.loss_jump_factor * ref:
        return []
    if len(before) >= th.loss_noise_min and \
            not above_noise(loss[-1:], before, th.loss_rise_noise):
        return []
    what = (f"the loss before it ({fmt(ref)})" if len(before) == 1 else
            f"the median {fmt(ref)} of the {len(before)} losses before it")
    return [Finding(
        f"The loss jumped to {fmt(loss[-1])} at step {h.step}, {fmt(loss[-1] / ref)} times "
        f"{what}, after an update of "
        f"{fmt(step_ratio)} times the weights (median over the weight matrices; healthy is "
        f"~1e-3).", None,
        {"loss": float(loss[-1]), "before_median": ref, "update_ratio": step_ratio,
         "steps": [int(s) for s in steps]})]


def _regain(h, th, state):
    key = loss_key(h)
    if not h.has(key):
        return []
    _, loss = h.scalar(key, th.loss_smooth)
    first = finite(h.first(key))
    n_first = min(th.loss_smooth, FIRST_VALUES)  # the history keeps FIRST_VALUES first values
    if len(loss) < th.loss_smooth or len(first) < n_first or not np.all(np.isfinite(loss)):
        return []
    start = float(np.median(first[:n_first]))
    smooth = float(np.median(loss[-th.loss_smooth:]))
    best = state["best"] = min(state.get("best", smooth), smooth)
    _, recent = h.scalar(key, th.loss_regain_noise_records)
    # standard error of a median of loss_smooth values: 1.2533 sigma / sqrt(n)
    noise = th.loss_regain_noise * 1.2533 * robust_sigma(finite(recent)) / np.sqrt(th.loss_smooth)
    progress = start - best
    if progress <= max(th.loss_regain_min_progress * abs(start), noise) or \
            smooth <= best + max(th.loss_regain_fraction * progress, noise):
        state["streak"] = 0
        return []
    state["streak"] = state.get("streak", 0) + 1
    if state["streak"] < th.loss_regain_window:
        return []
    return [Finding(
        f"The loss is diverging: its rolling median rose to {fmt(smooth)} at step {h.step}, "
        f"giving back {fmt(100 * (smooth - best) / progress)}% of the progress from "
        f"{fmt(start)} to its best {fmt(best)} ({state['streak']} records in a row).", None,
        {"smoothed_loss": smooth, "best": best, "initial": start})]


def above_noise(values, before, z: float) -> bool:
    """True if every one of ``values`` is more than ``z`` robust sigmas above the median of
    ``before``. Positive losses are compared as logarithms: mini-batch noise is multiplicative
    (a loss near convergence is mostly tiny, with the odd batch ten times larger)."""
    values, before = np.asarray(values, np.float64), np.asarray(before, np.float64)
    if np.all(values > 0) and np.all(before > 0):
        values, before = np.log(values), np.log(before)
    return bool(np.all(values > np.median(before) + z * robust_sigma(before)))


def robust_sigma(values) -> float:
    """1.4826 times the median absolute deviation: the standard deviation for Gaussian noise,
    robust to the heavy tail of mini-batch losses and to the odd spike."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return 0.0
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _loss_window(th) -> int:
    """Loss records ``check`` reads: the rise with the losses before it, the rolling median,
    the noise estimates (declared, so a small ``history`` cannot cut them short)."""
    return max(th.loss_smooth, th.loss_noise_records + th.loss_rise_steps + 1,
               th.loss_regain_noise_records)


RULE = Rule(
    code="lr_too_high", severity=schema.WARNING,
    summary="the loss rises fast or spikes, or update ratios sit far above 1e-3",
    suggestion=("Lower the learning rate (try 3-10x lower), add a warm-up, or clip gradients; "
                "with Adam also consider a larger eps. Aim for update/weight ratios near 1e-3."),
    check=check, keys=(Keys.UPDATE_RATIO, Keys.LOSS, Keys.WEIGHT_NORM),
    suppressed_by=("missing_zero_grad", "input_scale"), per_layer=False,
    windows=lambda th: {Keys.UPDATE_RATIO: 1, Keys.WEIGHT_NORM: 1,
                        Keys.LOSS: _loss_window(th), DKeys.CRIT_LOSS: _loss_window(th)})
