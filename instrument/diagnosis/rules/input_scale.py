"""input_scale: model inputs are far from standardized.

Reads the ``input_stats`` instrument's mean, std and extremes of the model's first (floating-point)
input. Reported when, in all of the last ``input_records`` records, the std is above
``input_std_high`` (e.g. pixels in 0..255), or the mean is more than ``input_mean_ratio`` stds
away from 0 (and above ``input_mean_min``), or every value is tinier than ``input_absmax_low``
(scaled twice). Images in [0, 1] and one-hot inputs pass.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import fmt
from instrument.diagnosis.rule import Rule
from instrument.store import schema
from instrument.store.schema import DKeys


def check(h, th, facts, state):
    n = th.input_records
    if not h.has(DKeys.INPUT_STD) or h.count(DKeys.INPUT_STD) < n:
        return []
    _, mean = h.scalar(DKeys.INPUT_MEAN, n)
    _, std = h.scalar(DKeys.INPUT_STD, n)
    _, lo = h.scalar(DKeys.INPUT_MIN, n)
    _, hi = h.scalar(DKeys.INPUT_MAX, n)
    if len(mean) < n or not np.all(np.isfinite(mean) & np.isfinite(std)):
        return []
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    problems = []
    if np.all(std > th.input_std_high):
        problems.append(f"std {fmt(std[-1])} (above {fmt(th.input_std_high)})")
    if np.all((np.abs(mean) > th.input_mean_ratio * std) & (np.abs(mean) > th.input_mean_min)):
        problems.append(f"mean {fmt(mean[-1])}, {fmt(abs(mean[-1]) / max(std[-1], 1e-30))} stds "
                        f"away from 0")
    if np.all(absmax < th.input_absmax_low):
        problems.append(f"all values tiny (|x| <= {fmt(absmax[-1])})")
    if not problems:
        return []
    return [Finding(
        f"Model inputs are not standardized at step {h.step}: {'; '.join(problems)}; range "
        f"[{fmt(lo[-1])}, {fmt(hi[-1])}].", None,
        {"mean": float(mean[-1]), "std": float(std[-1]), "min": float(lo[-1]),
         "max": float(hi[-1])})]


RULE = Rule(
    code="input_scale", severity=schema.WARNING,
    summary="model inputs are far from standardized (e.g. pixels in 0..255, a large mean)",
    suggestion=("Standardize the inputs with statistics of the training set: x = (x - mean) / "
                "std per feature or channel (for images, e.g. ToTensor() then Normalize())."),
    check=check, needs=("input_stats",),
    keys=(DKeys.INPUT_MEAN, DKeys.INPUT_STD, DKeys.INPUT_MIN, DKeys.INPUT_MAX))
