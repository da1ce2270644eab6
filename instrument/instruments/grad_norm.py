"""Gradient norms: per parameter, the global L2 norm, and the global norm before clipping.

Taken in the optimizer's pre-step hook (after the closure's backward when the loop passes one),
when gradients are final: averaged by DDP, unscaled by a GradScaler, clipped if the loop clips.
Never from per-parameter autograd hooks, which under DDP see local, un-averaged gradients. A
parameter without a gradient records NaN ("not recorded").

**Before clipping.** Loops that clip (``clip_grad_norm_``, Lightning's ``gradient_clip_val``,
Hugging Face's ``max_grad_norm``) step with a gradient other than the one backward produced,
and the norm users watch is the one before clipping (what ``clip_grad_norm_`` returns and what
Hugging Face logs as ``grad_norm``). So the instrument also notes, when each backward finishes
(an autograd final callback queued from a post-accumulate-grad hook, re-queued once so that it
runs after DDP's and FSDP's own end-of-backward callbacks), which gradient tensors are in
``.grad`` and their version counters. At the step:

* nothing changed them since (no clipping): the step uses exactly what backward left. The norm is
  taken once, and ``grad_norm/total_before_clip`` is not recorded (it would equal
  ``grad_norm/total``);
* something edited them in place (clipping, or a ``GradScaler`` unscaling them: its in-place
  unscale bumps no version counter, so a scaler calling the step is looked for among the
  callers, as ``scaler.step(optimizer)`` does): their norms as backward left them were
  taken at the end of that backward, and ``grad_norm/total_before_clip`` is recorded when its
  value differs from ``grad_norm/total``. A gradient scaler's scale is divided out, so the value
  is the unscaled norm, as ``clip_grad_norm_`` sees it after ``scaler.unscale_``.

Taking norms at the end of every backward costs one pass per micro-batch under gradient
accumulation, so it is done only while the loop is seen to edit gradients after backward (from
the first step on: a loop that never clips pays nothing extra). A loop that starts clipping
later loses the before-clip value of that one step (not recorded, never wrong).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from instrument.callers import calling_instance
from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import Keys
from instrument.tensorops import IndexCache, local, norms, write_at

SCALER_FRAMES = 10
"""How many callers above the instrument's ``pre_step`` are searched for a ``GradScaler.step``."""


class GradNorm(Instrument):
    name = "grad_norm"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return bool(ctx.params)

    def setup(self, buffer):
        n = len(self.ctx.params)
        self.l2 = buffer.add("grad_norm", n, reduce="norm")
        self.before = buffer.add("grad_norm_before_clip", n, reduce="norm")
        self.cache = IndexCache(buffer.device)
        self._armed = False  # a scheduled step is in progress
        self._queued = False  # an end-of-backward callback is queued
        self._track = True  # take norms at the end of backward (the loop edits gradients)
        self.begin_step(0)
        self._armed = False

    def attach(self):
        return [p.register_post_accumulate_grad_hook(self._accumulated)
                for p in self.ctx.params if p.requires_grad]

    def begin_step(self, step):
        self._present = []
        self._left = None  # (indices, grads, versions) as the last backward left them
        self._before_taken = False  # norms of exactly those gradients are in self.before
        self._edited = False
        self._armed = True

    # ---- end of backward (autograd's final callbacks) ------------------------------------
    def _accumulated(self, param):
        if self._armed and not self._queued:
            self._queued = True
            torch.autograd.Variable._execution_engine.queue_callback(self._requeue)

    def _requeue(self):
        # callbacks queued by a callback run after every callback queued before it: DDP's and
        # FSDP's end-of-backward reductions, queued during this backward, have run by then
        torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)

    def _backward_done(self):
        self._queued = False
        idx, grads = self._grads()
        self._left = (idx, grads, [g._version for g in grads])
        self._before_taken = self._track
        if self._track:
            with torch.no_grad():
                write_at(self.before.view, self.cache, idx, norms([local(g) for g in grads]))

    # ---- the step ---------------------------------------------------------------------------
    def _grads(self):
        idx, grads = [], []
        for i, p in enumerate(self.ctx.params):
            if p.grad is not None:
                idx.append(i)
                grads.append(p.grad)
        return idx, grads

    def pre_step(self):
        idx, grads = self._grads()
        self._present = idx
        left, self._left = self._left, None
        # a GradScaler unscales the gradients in place without bumping their version counters
        scaler = _calling_scaler()
        if scaler is None and left is not None and left[0] == idx and all(
                g is g0 and g._version == v for g, g0, v in zip(grads, left[1], left[2])):
            # the step uses exactly the gradient backward left
            self._track = False
            if self._before_taken:
                self.l2.view.copy_(self.before.view)
                return
        else:
            self._edited = left is not None
            self._track = self._track or self._edited
            if self._edited and self._before_taken and scaler is not None:
                # the norms at the end of backward are of the scaled gradient
                self.before.view.div_(scaler._scale.to(self.before.view))
        write_at(self.l2.view, self.cache, idx, norms([local(g) for g in grads]))

    def end_step(self):
        self._armed = False

    def snapshot(self):
        return self._present, self._edited and self._before_taken

    def decode(self, step: HostStep, info):
        present, before_taken = info
        step.extra["grad_present"] = present
        l2 = step.section("grad_norm")
        names = self.ctx.param_names
        step.data.layers[Keys.GRAD_NORM] = LayerValues(names, l2)
        have = ~np.isnan(l2)
        if not have.any():
            return
        total = float(np.sqrt(np.sum(l2[have] ** 2)))
        step.data.scalars[Keys.GRAD_NORM_TOTAL] = total
        if before_taken:
            before = step.section("grad_norm_before_clip")
            ok = ~np.isnan(before)
            if ok.any():
                value = float(np.sqrt(np.sum(before[ok] ** 2)))
                if not math.isclose(value, total, rel_tol=1e-6, abs_tol=0.0):
                    step.data.scalars[Keys.GRAD_NORM_TOTAL_BEFORE_CLIP] = value


def _calling_scaler():
    """The enabled ``torch.amp.GradScaler`` whose ``step()`` called ``optimizer.step()`` (it
    unscaled the gradients first), found among the callers of the optimizer's step hooks."""
    # from the caller of pre_step up (frames: calling_instance, this function, pre_step)
    scaler = calling_instance(torch.amp.GradScaler, 3, SCALER_FRAMES, _SCALER_METHODS)
    return scaler if scaler is not None and scaler.is_enabled() and \
        scaler._scale is not None else None


_SCALER_METHODS = frozenset(name for name, value in vars(torch.amp.GradScaler).items()
                            if callable(value)) | {"step", "_maybe_opt_step"}
