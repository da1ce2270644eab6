"""The windowed rules on synthetic series: the step at which they fire (or that they stay quiet)
is computed independently in each test from the definition in docs/rules.md."""

from __future__ import annotations

import math

import numpy as np
import pytest

from instrument.diagnosis import Engine, RunFacts, Thresholds
from instrument.diagnosis.rules import (
    clipping_saturated,
    exploding_gradients,
    input_scale,
    loss_at_chance,
    lr_schedule_increasing,
    lr_too_high,
    repeated_batch,
    single_label_batch,
)
from instrument.store.records import StepData

TH = Thresholds()


def first_step(rule_module, series: dict, facts=None, thresholds=TH):
    """Feed ``series`` (key -> list of values, None = not recorded) to one rule; the step of
    its first finding, or None."""
    facts = facts or RunFacts(instruments=["grad_norm", "inputs", "input_stats", "criterion",
                                           "logits"],
                              criterion={"class": "CrossEntropyLoss", "kind": "cross_entropy"})
    eng = Engine(facts, thresholds, rules=[rule_module.RULE], console=False, strict=True)
    n = max(len(v) for v in series.values())
    for step in range(n):
        d = StepData(step, scalars={k: float(v[step]) for k, v in series.items()
                                    if step < len(v) and v[step] is not None})
        if eng.observe(d):
            return step
    return None


def consecutive_rises_after_decay(lr, k):
    """Brute force: the first step ending k consecutive increases that start after lr fell
    below its running peak."""
    peak, decayed, streak = lr[0], False, 0
    for i in range(1, len(lr)):
        streak = streak + 1 if lr[i] > lr[i - 1] * (1 + 1e-6) else 0
        if decayed and streak >= k:
            return i
        if lr[i] < peak * (1 - 1e-6) and streak == 0:
            decayed = True
        peak = max(peak, lr[i])
    return None


# ---- lr_schedule_increasing ---------------------------------------------------------------------
def _cos(i, t_max, lo=0.0):
    return lo + 0.5 * (1 - lo) * (1 + math.cos(math.pi * i / t_max))


SCHEDULES = {
    "warmup_cosine": [min(1, (i + 1) / 20) if i < 20 else _cos(i - 20, 280) for i in range(300)],
    "step_decay": [0.1 * 0.5 ** (i // 50) for i in range(300)],
    "warm_restarts": [_cos(i % 50, 50) for i in range(300)],
    "one_cycle": [(i + 1) / 100 if i < 100 else _cos(i - 100, 200) for i in range(300)],
    "constant": [0.01] * 300,
    "cosine_too_short": [_cos(i, 100) for i in range(300)],
    "cyclic": [abs((i % 40) - 20) / 20 + 0.1 for i in range(300)],
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_lr_schedule_increasing(name):
    lr = SCHEDULES[name]
    expected = consecutive_rises_after_decay(lr, TH.schedule_rise_steps)
    got = first_step(lr_schedule_increasing, {"lr/0": lr})
    assert got == expected
    assert (got is None) == (name in ("warmup_cosine", "step_decay", "warm_restarts",
                                      "one_cycle", "constant"))


# ---- exploding_gradients -------------------------------------------------------------------------
def test_exploding_gradients_level_shift_but_not_heavy_tailed_noise():
    rng = np.random.default_rng(0)
    noise = np.exp(rng.normal(0, 1.0, 2000))  # lognormal, heavy-tailed: spikes of 10x occur
    assert first_step(exploding_gradients, {"grad_norm/total": noise}) is None
    shifted = noise[:300].copy()
    shifted[200:] *= 1e3  # the norm jumps by three orders of magnitude at step 200
    got = first_step(exploding_gradients, {"grad_norm/total": shifted})
    base = np.median(shifted[145:195])  # running median before the recent 5 records
    ref = next(s for s in range(TH.explode_min_baseline + 4, 300)
               if sum(shifted[s - 4:s + 1] > TH.explode_factor * np.median(
                   shifted[max(0, s - 54):s - 4])) >= TH.explode_steps
               and shifted[s] > TH.explode_factor * np.median(shifted[max(0, s - 54):s - 4]))
    assert got == ref == 200 + TH.explode_steps - 1 and base > 0


def test_exploding_gradients_growth_by_orders_of_magnitude():
    g = np.geomspace(1.0, 1e5, 400)  # smooth growth: never 10x its recent median
    got = first_step(exploding_gradients, {"grad_norm/total": g})
    settled = TH.explode_min_baseline
    start = np.median(g[settled - 5:settled])
    ref = next(s for s in range(settled + 4, 400) if np.median(g[s - 4:s + 1]) >= 1e3 * start)
    assert got == ref


def test_exploding_gradients_repeated_huge_spikes():
    rng = np.random.default_rng(8)
    g = np.exp(rng.normal(0, 0.5, 300))
    g[150] *= 1e4  # one spike: a bad batch, quiet
    assert first_step(exploding_gradients, {"grad_norm/total": g}) is None
    g[170] *= 1e4  # a second one within the window
    assert first_step(exploding_gradients, {"grad_norm/total": g}) == 170


def test_exploding_gradients_quiet_while_training_leaves_its_initialization():
    # the norm grows 30x over the first 40 steps, as deep networks do, then settles
    g = np.concatenate([np.geomspace(0.1, 3.0, 40), np.full(200, 3.0)])
    g = g * np.exp(np.random.default_rng(7).normal(0, 0.3, len(g)))
    assert first_step(exploding_gradients, {"grad_norm/total": g}) is None


# ---- clipping_saturated --------------------------------------------------------------------------
def test_clipping_saturated():
    rng = np.random.default_rng(1)
    raw = np.exp(rng.normal(0.5, 0.5, 300))  # about 84 % of the steps above the clip value 1
    clipped = np.where(raw > 1.0, 1.0 - 1e-7, raw)  # what clip_grad_norm_ leaves behind
    w = TH.clip_window
    ref = next(s for s in range(w - 1, 300)
               if clipped[s] == clipped[s - w + 1:s + 1].max()
               and np.mean(np.abs(clipped[s - w + 1:s + 1] - clipped[s - w + 1:s + 1].max())
                           <= TH.clip_tolerance * clipped[s - w + 1:s + 1].max())
               >= TH.clip_fraction)
    assert first_step(clipping_saturated, {"grad_norm/total": clipped}) == ref
    assert first_step(clipping_saturated, {"grad_norm/total": raw}) is None  # unclipped
    rare = np.minimum(raw, np.quantile(raw, 0.95))  # clipping that trims outliers only
    assert first_step(clipping_saturated, {"grad_norm/total": rare}) is None


# ---- repeated_batch ----------------------------------------------------------------------------
def test_repeated_batch_fires_on_the_tenth_identical_fingerprint():
    fp0 = list(np.random.default_rng(2).normal(size=30))
    fp1 = list(np.random.default_rng(3).normal(size=30))
    fp0[5:30] = [7.0] * 25
    fp1[5:30] = [-3.0] * 25
    got = first_step(repeated_batch, {"input/fingerprint0": fp0, "input/fingerprint1": fp1})
    assert got == 5 + TH.repeat_steps - 1
    fp1[5:30] = list(np.random.default_rng(4).normal(size=25))  # same sum, other batches
    assert first_step(repeated_batch, {"input/fingerprint0": fp0,
                                       "input/fingerprint1": fp1}) is None


# ---- single_label_batch ------------------------------------------------------------------------
def _labels(batches):
    return {"criterion/targets": [len(b) for b in batches],
            "criterion/target_min": [min(b) for b in batches],
            "criterion/target_max": [max(b) for b in batches]}


def test_single_label_batch_sorted_vs_imbalanced():
    rng = np.random.default_rng(5)
    sorted_labels = np.sort(rng.integers(0, 10, 64 * 40))
    batches = [sorted_labels[i * 64:(i + 1) * 64] for i in range(40)]
    single = [len(set(b)) == 1 for b in batches]
    ref = next(s for s in range(19, 40) if single[s] and sum(single[s - 19:s + 1]) >= 10)
    assert first_step(single_label_batch, _labels(batches)) == ref
    imbalanced = [(rng.random(32) < 0.02).astype(int) for _ in range(200)]  # 2 % positives
    assert first_step(single_label_batch, _labels(imbalanced)) is None
    shuffled = [rng.integers(0, 10, 64) for _ in range(100)]
    assert first_step(single_label_batch, _labels(shuffled)) is None
    constant = [np.zeros(32, dtype=int) for _ in range(30)]  # every label is 0
    assert first_step(single_label_batch, _labels(constant)) == 19
    tiny = [np.array([3]) for _ in range(30)]  # batch size 1: says nothing
    assert first_step(single_label_batch, _labels(tiny)) is None


# ---- input_scale ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,mean,std,lo,hi,fires", [
    ("standardized", 0.0, 1.0, -2.5, 3.1, False),
    ("images_0_1", 0.45, 0.27, 0.0, 1.0, False),
    ("one_hot_1000", 0.001, 0.0316, 0.0, 1.0, False),
    ("pixels_0_255", 110.0, 75.0, 0.0, 255.0, True),
    ("kelvin", 290.0, 8.0, 260.0, 320.0, True),
    ("scaled_twice", 0.0017, 0.001, 0.0, 0.0039, True),
])
def test_input_scale(name, mean, std, lo, hi, fires):
    series = {"input/mean": [mean] * 10, "input/std": [std] * 10, "input/min": [lo] * 10,
              "input/max": [hi] * 10}
    got = first_step(input_scale, series)
    assert (got == TH.input_records - 1) if fires else got is None


# ---- loss_at_chance ---------------------------------------------------------------------------
def test_loss_at_chance_waits_for_warmup_and_step_min():
    rng = np.random.default_rng(6)
    n = 300
    chance = math.log(10)
    loss = chance + rng.normal(0, 0.02, n)
    series = {"criterion/loss": loss, "criterion/classes": [10] * n}
    assert first_step(loss_at_chance, series) == TH.chance_min_step
    lr = [min(1.0, (i + 1) / 200) for i in range(n)]
    warm = dict(series, **{"lr/0": lr})
    # quiet while the learning rate rose over the last 10 records (the warm-up)
    ref = next(s for s in range(TH.chance_min_step, n) if lr[s] <= lr[s - 9])
    assert first_step(loss_at_chance, warm) == ref == 208
    learning = dict(series, **{"criterion/loss": chance * np.exp(-np.arange(n) / 100)})
    assert first_step(loss_at_chance, learning) is None


# ---- lr_too_high: the loss's own noise ------------------------------------------------------------
def _noisy_plateau(rng, n, level=0.05):
    """Mini-batch losses of a nearly converged model: log-normal around ``level``, and one
    batch in 30 with a misclassified sample (20x)."""
    loss = level * np.exp(rng.normal(0, 0.8, n))
    return np.where(rng.random(n) < 1 / 30, 20 * loss, loss)


@pytest.mark.parametrize("seed", range(4))
def test_lr_too_high_quiet_on_a_noisy_low_plateau(seed):
    """Fine-tuning at a low loss: spikes, runs of rises and a noisy rolling minimum are noise."""
    series = {"loss": _noisy_plateau(np.random.default_rng(seed), 2000)}
    assert first_step(lr_too_high, series) is None


def test_lr_too_high_later_divergence_out_of_the_noise():
    """Down to a plateau, then up 2 % a step: found once the smoothed loss gave back half the
    progress (docs/rules.md) and stayed there for 10 records, noise or not."""
    rng = np.random.default_rng(7)
    n_fall, n_flat, n_rise = 200, 100, 200
    plateau = 2.3 * np.exp(-n_fall / 60) + 0.1
    level = np.concatenate([2.3 * np.exp(-np.arange(n_fall) / 60) + 0.1, np.full(n_flat, plateau),
                            plateau * 1.02 ** np.arange(n_rise)])
    got = first_step(lr_too_high, {"loss": level * np.exp(rng.normal(0, 0.3, level.size))})
    start = np.median(level[:9])
    half_back = next(i for i in range(n_fall + n_flat, level.size)
                     if level[i] > plateau + 0.5 * (start - plateau))
    # the rolling median of 9 lags ~4 records, then 10 records in a row
    assert got is not None and half_back - 10 <= got <= half_back + 4 + 10 + 10, (got, half_back)


def test_lr_too_high_early_divergence_from_a_low_noisy_start():
    rng = np.random.default_rng(8)
    calm = _noisy_plateau(rng, 30)
    burst = np.median(calm) * 4.0 ** np.arange(1, 8)  # too high a learning rate, at step 30
    got = first_step(lr_too_high, {"loss": np.concatenate([calm, burst])})
    assert got is not None and 30 <= got <= 34, got
