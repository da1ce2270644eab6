"""Activation statistics of every leaf module's output: mean, std, min, max, the fraction of
exact zeros, the fraction of dead units, the saturation fraction and the number of calls whose
output held a NaN or an Inf.

* A module called several times in a step (gradient accumulation, weight sharing) is
  summarized over all its calls: sums add up, extremes combine, and a unit is dead only if it
  was zero in every call.
* A *unit* is a feature (last dim) or a channel (dim 1 of images and 1-D convolutions, see
  :func:`instrument.modules.unit_dim`); it is dead when it is exactly zero for the whole batch.
  ``act/unit_observations`` says how many values each unit had in the step (batch rows times
  positions, over all calls): the evidence behind its dead fraction (a unit of a tiny batch is
  easily zero by chance).
* The saturation fraction is recorded for bounded activations (tanh, sigmoid, hardtanh, ...):
  outputs within :data:`SATURATION_MARGIN` of either end of the range.
* Statistics are computed in float32 (bf16/fp16 outputs are accumulated in float32), with
  branch-free reductions chosen for speed on CPU and GPU.
* ``act/nonfinite`` counts the calls of the step whose output held a NaN or an Inf. It is read
  off the float32 sum the mean needs (NaN or Inf exactly when an element is, unless finite
  values sum past 3e38), not counted per element: an elementwise count cost a quarter of this
  instrument on large outputs. Where an output held a NaN, its mean and std are NaN too; the
  ``nonfinite`` instrument names the first module it came from.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.modules import primary_tensor, saturation_range, unit_dim
from instrument.store.records import LayerValues
from instrument.store.schema import Keys
from instrument.tensorops import sum_and_sumsq

SATURATION_MARGIN = 0.03
"""Saturated: within 3 % of the half-range of either limit (tanh: |y| > 0.97; sigmoid: y < 0.015
or y > 0.985), the usual rule of thumb (pre-activation |x| > about 2.1 for tanh)."""

# columns of the "act_sums" section (all add up over calls and ranks)
COUNT, SUM, SUMSQ, NONZERO, SATURATED, NONFINITE = range(6)


def _count(mask: torch.Tensor) -> torch.Tensor:
    """Number of True elements. Summing bytes as int32 is several times faster than the default
    int64 bool sum on CPU; int64 only where int32 could overflow."""
    dtype = torch.int32 if mask.numel() < 2**31 else torch.int64
    return mask.view(torch.uint8).sum(dtype=dtype)


def call_stats(x: torch.Tensor, rng) -> torch.Tensor:
    """``[sum, sumsq, nonzero, saturated, nonfinite]`` of ``x`` as float32 on x's device."""
    total, sumsq = sum_and_sumsq(x)
    nonzero = _count(x.bool()).float()
    nonfinite = torch.isfinite(total).logical_not().float()  # this call's output held NaN/Inf
    if rng is None:
        saturated = torch.zeros((), dtype=torch.float32, device=x.device)
    else:
        lo, hi = rng
        mid, half = (lo + hi) / 2, (hi - lo) / 2
        dev = x.abs() if mid == 0 else (x - mid).abs()
        saturated = _count(dev > (1 - SATURATION_MARGIN) * half)
    return torch.stack([total, sumsq, nonzero, saturated.float(), nonfinite])


class Activations(Instrument):
    name = "activations"
    default_schedule = 10

    def setup(self, buffer):
        n = len(self.ctx.modules)
        self.sums = buffer.add("act_sums", (n, 6), fill=0.0, reduce="sum")
        # dead units are per-unit facts: rank-local counts do not add up to the global one
        self.units = buffer.add("act_units", (n, 3), fill=0.0, reduce="local")
        self.min = buffer.add("act_min", n, fill=math.inf, reduce="min")
        self.max = buffer.add("act_max", n, fill=-math.inf, reduce="max")
        self.ranges = [saturation_range(m) for m in self.ctx.modules]
        self._unit_dims: dict = {}
        self._prev = None

    def begin_step(self, step):
        self._umax, self._umin, self._seen = {}, {}, {}

    def forward(self, index, module, output):
        x = primary_tensor(output)
        if x is None or x.numel() == 0:
            return
        x = x.detach()
        row = self.sums.view[index]
        row[COUNT].add_(x.numel())
        row[SUM:].add_(call_stats(x, self.ranges[index]))
        self._track_units(index, module, x)

    def _track_units(self, index, module, x):
        key = (index, x.dim())
        dim = self._unit_dims.get(key)
        if dim is None:
            dim = self._unit_dims[key] = unit_dim(module, x, self._prev)
        self._prev = (tuple(x.shape), dim)
        dims = tuple(d for d in range(x.dim()) if d != dim)
        umax = x.amax(dim=dims) if dims else x
        umin = x.amin(dim=dims) if dims else x
        seen = x.numel() // max(umax.numel(), 1)  # values per unit in this call
        old = self._umax.get(index)
        if old is not None and old.shape == umax.shape:
            torch.maximum(old, umax, out=old)
            torch.minimum(self._umin[index], umin, out=self._umin[index])
            self._seen[index] += seen
        else:
            self._umax[index], self._umin[index], self._seen[index] = umax, umin, seen

    def end_step(self):
        for index, umax in self._umax.items():
            umin = self._umin[index]
            dead = _count((umax == 0) & (umin == 0))
            self.units.view[index, 0] = umax.numel()
            self.units.view[index, 1].copy_(dead)
            self.units.view[index, 2] = self._seen[index]
            self.min.view[index].copy_(umin.min())
            self.max.view[index].copy_(umax.max())
        self._umax, self._umin, self._seen = {}, {}, {}

    def decode(self, step: HostStep, info):
        s = step.section("act_sums")
        units = step.section("act_units")
        n = s[:, COUNT]
        called = n > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            nz = np.where(called, n, np.nan)
            mean = s[:, SUM] / nz
            var = np.maximum(s[:, SUMSQ] / nz - mean**2, 0.0) * nz / np.maximum(nz - 1, 1)
            std = np.sqrt(var)
            zero = 1.0 - s[:, NONZERO] / nz
            sat = np.where([r is not None for r in self.ranges], s[:, SATURATED] / nz, np.nan)
            tracked = called & (units[:, 0] > 0)
            dead = np.where(tracked, units[:, 1] / units[:, 0], np.nan)
            observed = np.where(tracked, units[:, 2], np.nan)
        names = self.ctx.module_names
        out = {
            Keys.ACT_MEAN: mean, Keys.ACT_STD: std,
            Keys.ACT_MIN: np.where(called, step.section("act_min"), np.nan),
            Keys.ACT_MAX: np.where(called, step.section("act_max"), np.nan),
            Keys.ACT_ZERO_FRAC: zero, Keys.ACT_DEAD_FRAC: dead,
            Keys.ACT_UNIT_OBSERVATIONS: observed,
            Keys.ACT_SATURATION_FRAC: sat,
            Keys.ACT_NONFINITE: np.where(called, s[:, NONFINITE], np.nan),
        }
        for key, values in out.items():
            step.data.layers[key] = LayerValues(names, values)
