"""The scale of the model's input batch: mean, std, min and max, computed on the device.

Reads the same tensor as the ``inputs`` fingerprint (the first tensor argument of each
grad-enabled call of the model), floating-point inputs only. These are three passes over the
batch, so they run densely for the first steps (where 0..255 pixels or a forgotten normalization
show at once) and then every 10th step: a data pipeline's scale does not change from step to
step. Sums and extremes combine exactly over micro-batches (gradient accumulation) and over
data-parallel ranks.
"""

from __future__ import annotations

import math

import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.instruments.inputs import first_tensor
from instrument.schedules import dense_then_every
from instrument.store.schema import DKeys
from instrument.tensorops import sum_and_sumsq

COUNT, SUM, SUMSQ = range(3)


class InputStats(Instrument):
    name = "input_stats"
    default_schedule = dense_then_every(10, 10)

    def setup(self, buffer):
        self.sums = buffer.add("input_moments", 3, fill=0.0, reduce="sum")
        self.min = buffer.add("input_min", 1, fill=math.inf, reduce="min")
        self.max = buffer.add("input_max", 1, fill=-math.inf, reduce="max")

    def begin_step(self, step):
        self._seen = False

    def model_input(self, args, kwargs):
        x = first_tensor(args, kwargs)
        if x is None or not x.is_floating_point() or x.numel() == 0:
            return
        x = x.detach()
        self._seen = True
        row = self.sums.view
        row[COUNT].add_(x.numel())
        row[SUM:].add_(torch.stack(sum_and_sumsq(x)).to(row))
        lo, hi = torch.aminmax(x)
        torch.minimum(self.min.view, lo.to(self.min.view), out=self.min.view)
        torch.maximum(self.max.view, hi.to(self.max.view), out=self.max.view)

    def snapshot(self):
        return self._seen

    def decode(self, step: HostStep, seen):
        s = step.section("input_moments")
        n = s[COUNT]
        if not seen or n <= 0:
            return
        mean = s[SUM] / n
        var = max(s[SUMSQ] / n - mean * mean, 0.0) * n / max(n - 1, 1)
        out = step.data.scalars
        out[DKeys.INPUT_MEAN] = float(mean)
        out[DKeys.INPUT_STD] = float(math.sqrt(var))
        out[DKeys.INPUT_MIN] = float(step.section("input_min")[0])
        out[DKeys.INPUT_MAX] = float(step.section("input_max")[0])
