"""The criterion's own view of each step: its loss, the number of classes and the targets.

Each grad-enabled loss call contributes (the calls of the criterion module given as
``watch(..., loss_fn=criterion)``; without one, the cross-entropy and NLL calls that
:mod:`instrument.losses` captures, wherever the step makes them: those of the step's first
classifier kind, recorded as :attr:`DKeys.CRIT_NLL`, so that a step mixing ``F.cross_entropy``
with ``F.nll_loss`` never averages the two, and the logits instrument, which picks the same
calls, and the rules know which loss the values belong to)

* its loss, normalized to a per-target mean whatever the ``reduction`` (so that it compares with
  ln(number of classes) even when the loop logs ``loss / accumulation_steps``);
* the number of classes, ``input.shape[1]`` (``input.shape[0]`` for one unbatched sample);
* the number of targets and the smallest and largest class index among them (ignoring
  ``ignore_index``), or for float targets (BCE) the smallest and largest value: a batch whose
  targets are all one class has min == max.

All on the device; calls within a step (gradient accumulation) are combined. Captured losses
are recorded on each of the first 20 steps and every 10th after (capturing costs a Python call
per torch op on those steps); a criterion module's calls on every step (its hook is free).
"""

from __future__ import annotations

import math

import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.losses import NLL, LossCall
from instrument.schedules import dense_then_every
from instrument.store.schema import INFO, LOSS_NOT_CAPTURED, DKeys
from instrument.transforms import SKIPPED

CALLS, LOSS, TARGETS = range(3)


class Criterion(Instrument):
    name = "criterion"
    default_schedule = 1

    def __init__(self, ctx):
        super().__init__(ctx)
        self.captured = ctx.loss_fn is None
        self._said = False  # the run was told that no classifier loss was captured (writer)
        if self.captured:
            self.default_schedule = dense_then_every(20, 10)

    def setup(self, buffer):
        self.sums = buffer.add("crit_sums", 3, fill=0.0, reduce="sum")
        self.tmin = buffer.add("crit_target_min", 1, fill=math.inf, reduce="min")
        self.tmax = buffer.add("crit_target_max", 1, fill=-math.inf, reduce="max")

    def begin_step(self, step):
        self._classes = 0
        self._targets = False
        self._kinds: set = set()  # kinds of the loss calls seen (captured runs)
        self._kind = None  # captured runs: the classifier kind whose calls are recorded

    def loss_inputs(self, call: LossCall):
        x, t, output = call.input, call.target, call.output
        if not isinstance(output, torch.Tensor) or not isinstance(x, torch.Tensor):
            return
        self._kinds.add(call.name)
        if self.captured:  # the run's facts declare a classifier: one kind per step
            kind = call.step_kind(self._kind)
            if kind is None:
                return
            self._kind = kind
        row = self.sums.view
        count = None
        if isinstance(t, torch.Tensor) and t.numel() > 0 and not t.is_complex():
            count = self._targets_of(call, x, t)
        loss = output.detach().float()
        reduction = call.reduction or "mean"
        if reduction == "none" or loss.numel() != 1:
            loss = loss.mean()
        elif reduction == "sum" and count is not None:
            loss = loss / count.clamp_min(1)
        row[CALLS].add_(1)
        row[LOSS].add_(loss.reshape(()).to(row))
        if x.dim() >= 1:
            self._classes = max(self._classes, int(x.shape[1] if x.dim() >= 2 else x.shape[0]))

    def _targets_of(self, call, x, t):
        """Count and class range of the targets; returns the count (device scalar)."""
        t = t.detach()
        if t.is_floating_point() and t.dim() == x.dim() and t.dim() >= 2 and call.classifier:
            return None  # class probabilities (soft labels): no single class per target
        ignore_index = call.ignore_index
        if t.is_floating_point():
            valid = torch.isfinite(t)
        elif ignore_index is not None:
            valid = t != ignore_index
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

    def pre_step(self):
        """Marks the step as taken, so that a captured run without any classifier loss call
        says so once (see :meth:`decode`)."""

    def _nothing_captured(self, at: int, kinds: list):
        off = self.ctx.services.get("capture_off")
        if off:  # the monitor said why, in its own event
            return None
        seen = (f"only {', '.join(kinds)} (no class dimension, so no chance level)" if kinds
                else "none of F.cross_entropy, F.nll_loss, F.binary_cross_entropy[_with_logits] "
                     "or F.mse_loss")
        return self.event(
            LOSS_NOT_CAPTURED, INFO,
            f"Step {at} took an optimizer step but its loss calls were {seen}: the criterion "
            f"and logits series and the rules that read them (initial_loss, loss_at_chance, "
            f"probabilities_into_loss, single_label_batch) have nothing to read. A loss "
            f"computed otherwise can be given as watch(..., loss_fn=criterion_module)."
            + (" Forwards and losses inside torch.func transforms (vmap, grad) are not "
               "measured or captured."
               if self.ctx.services.get(SKIPPED) else ""),
            at, seen=kinds)

    def snapshot(self):
        return self._classes, self._targets, sorted(self._kinds), self._kind

    def decode(self, step: HostStep, info):
        classes, has_targets, kinds, kind = info
        s = step.section("crit_sums")
        if s[CALLS] == 0:
            if self.captured and not self._said:
                self._said = True  # once per run (writer thread only)
                event = self._nothing_captured(step.step, kinds)
                if event is not None:
                    step.events.append(event)
            return
        out = step.data.scalars
        out[DKeys.CRIT_LOSS] = float(s[LOSS] / s[CALLS])
        if kind is not None:
            out[DKeys.CRIT_NLL] = float(kind == NLL)
        if classes:
            out[DKeys.CRIT_CLASSES] = float(classes)
        if has_targets:
            out[DKeys.CRIT_TARGETS] = float(s[TARGETS])
            if s[TARGETS] > 0:
                out[DKeys.CRIT_TARGET_MIN] = float(step.section("crit_target_min")[0])
                out[DKeys.CRIT_TARGET_MAX] = float(step.section("crit_target_max")[0])
