"""Stale-gradient detector for a missing ``optimizer.zero_grad()``, from metadata only.

After each optimizer step the instrument remembers, per parameter, *which* gradient tensor is in
``.grad`` and its version counter (``Tensor._version``, bumped by every in-place change). When
the next backward first accumulates into that parameter, two hooks compare:

* a tensor hook on the parameter, which autograd calls with the incoming gradient *before*
  accumulating it: is ``.grad`` still the very tensor left by the step, unchanged since?
* a post-accumulate-grad hook, called only when the gradient is really accumulated into
  ``.grad``: it confirms the suspicion. (``torch.autograd.grad(loss, params)`` calls the tensor
  hook but accumulates nothing: without this confirmation, gradient probes between the step and
  ``zero_grad()`` would be false alarms.)

``zero_grad()`` sets ``.grad`` to None or zeroes it in place (a new version), ``model.zero_grad()``
and ``p.grad = None`` likewise; so only a gradient that was never cleared since the step counts.
Gradient accumulation over micro-batches between two steps is untouched: only the first
accumulation after a step is checked. No gradient values are read (no device work at all).

Recorded per parameter as :attr:`DKeys.GRAD_STALE`: 1 (accumulated into the previous step's
gradient), 0 (into a cleared one) or NaN (no accumulation seen since the last record).
"""

from __future__ import annotations

import weakref

import numpy as np

from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import DKeys


class ZeroGrad(Instrument):
    name = "zero_grad"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return ctx.optimizer is not None and bool(ctx.params)

    def setup(self, buffer):
        self._after_step: dict = {}  # param index -> (weakref to .grad, its _version)
        self._suspect: dict = {}
        self._flags: dict = {}  # param index -> 0/1 since the last record

    def attach(self):
        handles = [self.ctx.optimizer.register_step_post_hook(self._stepped)]
        # parameters outside the optimizer are never cleared by optimizer.zero_grad(); that
        # they are not updated at all is the bigger problem (frozen_parameters reports it)
        self.held = sorted(set(self.ctx.opt_params))
        for i in self.held:
            p = self.ctx.params[i]
            if p.requires_grad:
                handles.append(p.register_hook(self._before(i, p)))
                handles.append(p.register_post_accumulate_grad_hook(self._accumulated(i)))
        return handles

    def _stepped(self, optimizer, args, kwargs):
        # after the step, so that in-place edits before it (clipping, unscaling) are included
        rec = self._after_step
        rec.clear()
        self._suspect.clear()
        for i in self.held:
            g = self.ctx.params[i].grad
            if g is not None:
                rec[i] = (weakref.ref(g), g._version)

    def _before(self, i, p):
        def hook(grad):
            rec = self._after_step.get(i)
            g = p.grad
            self._suspect[i] = (rec is not None and g is not None and rec[0]() is g
                                and g._version == rec[1])
            return None  # never change the gradient

        return hook

    def _accumulated(self, i):
        def hook(p):
            if i in self._after_step:  # only the first accumulation after a step is checked
                self._flags[i] = 1 if self._suspect.pop(i, False) else 0
                del self._after_step[i]
            return None

        return hook

    def pre_step(self):
        pass  # measuring happens in the hooks; this marks the instrument active for the step

    def snapshot(self):
        flags, self._flags = self._flags, {}
        return flags

    def decode(self, step: HostStep, flags):
        values = np.full(len(self.ctx.params), np.nan)
        for i, v in (flags or {}).items():
            values[i] = v
        step.data.layers[DKeys.GRAD_STALE] = LayerValues(self.ctx.param_names, values)
