"""The criterion's own view of each step: its loss, the number of classes and the targets.

Needs ``watch(..., loss_fn=criterion)``: the criterion module is hooked, and each grad-enabled
call ``criterion(input, target)`` contributes

* its loss, normalized to a per-target mean whatever the ``reduction`` (so that it compares with
  ln(number of classes) even when the loop logs ``loss / accumulation_steps``);
* the number of classes, ``input.shape[1]`` (``input.shape[0]`` for one unbatched sample);
* the number of targets and the smallest and largest class index among them (ignoring
  ``ignore_index``), or for float targets (BCE) the smallest and largest value: a batch whose
  targets are all one class has min == max.

All on the device; calls within a step (gradient accumulation) are combined.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from instrument.instruments.base import HostStep, Instrument
from instrument.store.schema import DKeys

CALLS, LOSS, TARGETS = range(3)


def criterion_args(args: tuple, kwargs: dict):
    """``(input, target)`` of a criterion call (positional or ``input=``/``target=``)."""
    x = args[0] if len(args) > 0 else kwargs.get("input")
    t = args[1] if len(args) > 1 else kwargs.get("target")
    return x, t


class Criterion(Instrument):
    name = "criterion"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return ctx.loss_fn is not None

    def setup(self, buffer):
        self.sums = buffer.add("crit_sums", 3, fill=0.0, reduce="sum")
        self.tmin = buffer.add("crit_target_min", 1, fill=math.inf, reduce="min")
        self.tmax = buffer.add("crit_target_max", 1, fill=-math.inf, reduce="max")
        self.reduction = getattr(self.ctx.loss_fn, "reduction", "mean")
        self.ignore_index = getattr(self.ctx.loss_fn, "ignore_index", None)

    def begin_step(self, step):
        self._classes = 0
        self._targets = False

    def loss_inputs(self, args, kwargs, output):
        x, t = criterion_args(args, kwargs)
        if not isinstance(output, torch.Tensor) or not isinstance(x, torch.Tensor):
            return
        row = self.sums.view
        count = None
        if isinstance(t, torch.Tensor) and t.numel() > 0 and not t.is_complex():
            count = self._targets_of(x, t)
        loss = output.detach().float()
        if self.reduction == "none" or loss.numel() != 1:
            loss = loss.mean()
        elif self.reduction == "sum" and count is not None:
            loss = loss / count.clamp_min(1)
        row[CALLS].add_(1)
        row[LOSS].add_(loss.reshape(()).to(row))
        if x.dim() >= 1:
            self._classes = max(self._classes, int(x.shape[1] if x.dim() >= 2 else x.shape[0]))

    def _targets_of(self, x, t):
        """Count and class range of the targets; returns the count (device scalar)."""
        t = t.detach()
        if t.is_floating_point() and t.dim() == x.dim() and t.dim() >= 2 and \
                isinstance(self.ctx.loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
            return None  # class probabilities (soft labels): no single class per target
        if t.is_floating_point():
            valid = torch.isfinite(t)
        elif self.ignore_index is not None:
            valid = t != self.ignore_index
        else:
            valid = torch.ones_like(t, dtype=torch.bool)
        tf = t.to(torch.float64)
        count = valid.sum().to(torch.float64)
        lo = torch.where(valid, tf, math.inf).amin()
        hi = torch.where(valid, tf, -math.inf).amax()
        self.sums.view[TARGETS].add_(count.to(self.sums.view))
        torch.minimum(self.tmin.view, lo.to(self.tmin.view), out=self.tmin.view)
        torch.maximum(self.tmax.view, hi.to(self.tmax.view), out=self.tmax.view)
        self._targets = True
        return count

    def snapshot(self):
        return self._classes, self._targets

    def decode(self, step: HostStep, info):
        classes, has_targets = info
        s = step.section("crit_sums")
        if s[CALLS] == 0:
            return
        out = step.data.scalars
        out[DKeys.CRIT_LOSS] = float(s[LOSS] / s[CALLS])
        if classes:
            out[DKeys.CRIT_CLASSES] = float(classes)
        if has_targets:
            out[DKeys.CRIT_TARGETS] = float(s[TARGETS])
            if s[TARGETS] > 0:
                out[DKeys.CRIT_TARGET_MIN] = float(step.section("crit_target_min")[0])
                out[DKeys.CRIT_TARGET_MAX] = float(step.section("crit_target_max")[0])
