"""Statistics and a fingerprint of the model's input batch, computed on the device.

The first tensor argument of each grad-enabled call of the model is summarized:

* floating-point inputs: mean, std, min and max over all elements (is the data standardized?);
* any input (also token ids): the number of samples (first dimension, from the shape: no sync)
  and a two-number *fingerprint*: each sample is projected onto a fixed pseudo-random vector,
  and the projections and their squares are summed. The same batch gives identical
  fingerprints (the same samples in another order too); different batches differ with
  overwhelming probability. Nothing is copied to the host but the two sums.

Everything is a sum over samples (or an extreme), so several calls in one step (gradient
accumulation) and data-parallel ranks combine exactly: the step's values describe all the
samples of the step, as one process on the global batch would see them.
"""

from __future__ import annotations

import math

import torch

from instrument.diagnosis.keys import DKeys
from instrument.instruments.base import HostStep, Instrument

COUNT, SUM, SUMSQ, FP0, FP1, SAMPLES = range(6)

FINGERPRINT_CACHE = 8
"""Projection vectors kept (one per per-sample size and device); inputs whose shapes keep
changing rebuild them."""


def first_tensor(args: tuple, kwargs: dict):
    """The first tensor among the positional, then keyword arguments (also one level inside
    tuples, lists and dicts), or None."""
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, (tuple, list)):
            inner = [v for v in value if isinstance(v, torch.Tensor)]
        elif isinstance(value, dict):
            inner = [v for v in value.values() if isinstance(v, torch.Tensor)]
        else:
            continue
        if inner:
            return inner[0]
    return None


class Inputs(Instrument):
    name = "inputs"
    default_schedule = 1

    def setup(self, buffer):
        self.sums = buffer.add("input_sums", 6, fill=0.0, reduce="sum")
        self.min = buffer.add("input_min", 1, fill=math.inf, reduce="min")
        self.max = buffer.add("input_max", 1, fill=-math.inf, reduce="max")
        self._proj: dict = {}

    def begin_step(self, step):
        self._seen = False
        self._float = False

    def model_input(self, args, kwargs):
        x = first_tensor(args, kwargs)
        if x is None or x.is_complex() or x.numel() == 0:
            return
        x = x.detach()
        b = x.shape[0] if x.dim() > 0 else 1
        self._seen = True
        row = self.sums.view
        row[SAMPLES].add_(b)
        if x.is_floating_point():
            self._float = True
            row[COUNT].add_(x.numel())
            # float32 sum and dot: several times cheaper than float64 reductions on CPU, and
            # precise enough for a scale check (calls are accumulated in the float64 buffer)
            if x.dtype == torch.float32 and x.is_contiguous():
                flat = x.view(-1)
                total, sumsq = flat.sum(), torch.dot(flat, flat)
            else:
                total = torch.sum(x, dtype=torch.float32)
                sumsq = torch.linalg.vector_norm(x, dtype=torch.float32).square()
            row[SUM].add_(total.to(row))
            row[SUMSQ].add_(sumsq.to(row))
            lo, hi = torch.aminmax(x)
            torch.minimum(self.min.view, lo.to(self.min.view), out=self.min.view)
            torch.maximum(self.max.view, hi.to(self.max.view), out=self.max.view)
        flat = x.reshape(b, -1).to(torch.float32)
        proj = flat @ self._projection(flat.shape[1], flat.device)  # one value per sample
        row[FP0:SAMPLES].add_(torch.stack([proj.sum(), torch.dot(proj, proj)]).to(row))

    def _projection(self, d: int, device):
        key = (d, str(device))
        w = self._proj.get(key)
        if w is None:
            if len(self._proj) >= FINGERPRINT_CACHE:
                self._proj.clear()
            # a fixed vector from a private generator: the same on every rank and run, and the
            # user's RNG stream is untouched
            gen = torch.Generator().manual_seed(0x5EED + d)
            w = self._proj[key] = (torch.rand(d, generator=gen) + 0.5).to(device)
        return w

    def snapshot(self):
        return self._seen, self._float

    def decode(self, step: HostStep, info):
        seen, is_float = info
        if not seen:
            return
        s = step.section("input_sums")
        out = step.data.scalars
        out[DKeys.INPUT_BATCH] = float(s[SAMPLES])
        out[DKeys.INPUT_FP0] = float(s[FP0])
        out[DKeys.INPUT_FP1] = float(s[FP1])
        n = s[COUNT]
        if is_float and n > 0:
            mean = s[SUM] / n
            var = max(s[SUMSQ] / n - mean * mean, 0.0) * n / max(n - 1, 1)
            out[DKeys.INPUT_MEAN] = float(mean)
            out[DKeys.INPUT_STD] = float(math.sqrt(var))
            out[DKeys.INPUT_MIN] = float(step.section("input_min")[0])
            out[DKeys.INPUT_MAX] = float(step.section("input_max")[0])
