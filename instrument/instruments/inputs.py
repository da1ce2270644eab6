"""A fingerprint of the model's input batch, computed on the device.

The first tensor argument of each grad-enabled call of the model is summarized as the number of
samples (first dimension, from the shape: no sync) and a two-number *fingerprint*: each sample is
projected onto a fixed pseudo-random vector, and the projections and their squares are summed.
The same batch gives identical fingerprints (the same samples in another order too); different
batches differ with overwhelming probability. Nothing is copied to the host but the two sums.
It works for any input, token ids included. (The input's scale, mean/std/min/max, is the
``input_stats`` instrument.)

The projection reads the whole batch once, a pass from memory that costs as much as the gradient
norms on an MLP's CPU step, so by default it runs at every step for the first 20 steps, then at
two neighbouring steps in every ten (:func:`~instrument.schedules.dense_then_pairs`): the
``repeated_batch`` rule compares consecutive records, and neighbours cannot be fooled by a data
order that cycles with the sampling period.

Everything is a sum over samples, so several calls in one step (gradient accumulation) and
data-parallel ranks combine exactly: the step's values describe all the samples of the step, as
one process on the global batch would see them.
"""

from __future__ import annotations

import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.schedules import dense_then_pairs
from instrument.store.schema import DKeys

FP0, FP1, SAMPLES = range(3)

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
    default_schedule = dense_then_pairs(20, 10)

    def setup(self, buffer):
        self.sums = buffer.add("input_sums", 3, fill=0.0, reduce="sum")
        self._proj: dict = {}

    def begin_step(self, step):
        self._seen = False

    def model_input(self, args, kwargs):
        x = first_tensor(args, kwargs)
        if x is None or x.is_complex() or x.numel() == 0:
            return
        x = x.detach()
        b = x.shape[0] if x.dim() > 0 else 1
        self._seen = True
        row = self.sums.view
        row[SAMPLES].add_(b)  # from the shape: no sync
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
        return self._seen

    def decode(self, step: HostStep, seen):
        if not seen:
            return
        s = step.section("input_sums")
        out = step.data.scalars
        out[DKeys.INPUT_BATCH] = float(s[SAMPLES])
        out[DKeys.INPUT_FP0] = float(s[FP0])
        out[DKeys.INPUT_FP1] = float(s[FP1])
