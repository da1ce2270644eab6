"""Stale-gradient detector for a missing ``optimizer.zero_grad()``, from metadata only.

A gradient is stale when the optimizer step uses a ``.grad`` that still holds the previous
step's gradient: backward accumulated into it and nothing cleared it in between. After each
optimizer step the instrument remembers, per parameter, *which* gradient tensor is in ``.grad``
and its version counter (``Tensor._version``, bumped by every in-place change): the start of a
chain. Two hooks follow every accumulation:

* a tensor hook on the parameter, which autograd calls with the incoming gradient *before*
  accumulating it: is ``.grad`` still the chain's tensor, unchanged since the step or since the
  chain's last accumulation?
* a post-accumulate-grad hook, called only when the gradient is really accumulated into
  ``.grad``: the chain goes on (its new version is noted), or, if ``.grad`` was cleared, the
  chain ends: what the parameter accumulates from then on is a fresh gradient.
  (``torch.autograd.grad(loss, params)`` calls the tensor hook but accumulates nothing.)

At the next optimizer step a parameter whose chain still holds its ``.grad`` (the same tensor:
clipping or unscaling it in place keeps it stale) steps with a stale gradient. So a loop that
accumulates into last step's gradients but clears them before its own backward (the DCGAN loop:
the generator's backward fills the discriminator's gradients after the discriminator's step,
and ``netD.zero_grad()`` clears them at the top of the next iteration) is not flagged.
``zero_grad()`` sets ``.grad`` to None or zeroes it in place (a new version), ``model.zero_grad()``
and ``p.grad = None`` likewise. Gradient accumulation over micro-batches between two steps is
untouched. No gradient values are read (no device work at all). One case metadata cannot tell:
a gradient filled after the step, then zeroed *in place* (``set_to_none=False``) and not
accumulated into again before the next step reads as stale (at the step only the tensor's
identity is compared, since clipping and unscaling edit it in place too).

Recorded per parameter as :attr:`DKeys.GRAD_STALE`: 1 (the step used a gradient accumulated
into the previous step's), 0 (into a cleared one) or NaN (no accumulation since the last step,
or no gradient at the previous step).
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
        self._chain: dict = {}  # param index -> (weakref to .grad, its _version): uncleared
        # since the last step
        self._into: dict = {}  # param index -> the tensor hook's verdict on the accumulation
        self._checked: set = set()  # params with a gradient at the last step
        self._seen: set = set()  # params that accumulated since the last step
        self._flags: dict = {}  # param index -> 0/1 at the last step, until recorded

    def attach(self):
        # parameters outside the optimizer are never cleared by optimizer.zero_grad(); that
        # they are not updated at all is the bigger problem (frozen_parameters reports it)
        self.held: list = []
        self._hooked: set = set()
        return [self.ctx.optimizer.register_step_post_hook(self._stepped),
                *self.optimizer_changed()]

    def optimizer_changed(self):
        """Hooks on the parameters the optimizer holds, that require grad and have none yet
        (added with ``add_param_group``, or unfrozen)."""
        self.held = sorted(set(self.ctx.opt_params))
        handles = []
        for i in self.held:
            p = self.ctx.params[i]
            if p.requires_grad and i not in self._hooked:
                self._hooked.add(i)
                handles.append(p.register_hook(self._before(i, p)))
                handles.append(p.register_post_accumulate_grad_hook(self._accumulated(i)))
        return handles

    def _stepped(self, optimizer, args, kwargs):
        # after the step, so that in-place edits before it (clipping, unscaling) are included
        chain = self._chain
        chain.clear()
        self._into.clear()
        self._seen.clear()
        for i in self.held:
            g = self.ctx.params[i].grad
            if g is not None:
                chain[i] = (weakref.ref(g), g._version)
        self._checked = set(chain)

    def _before(self, i, p):
        def hook(grad):
            link = self._chain.get(i)
            g = p.grad
            self._into[i] = (link is not None and g is not None and link[0]() is g
                             and g._version == link[1])
            return None  # never change the gradient

        return hook

    def _accumulated(self, i):
        def hook(p):
            if i not in self._checked:
                return None
            self._seen.add(i)
            if self._into.pop(i, False):  # into the chain: it goes on, at its new version
                self._chain[i] = (weakref.ref(p.grad), p.grad._version)
            else:  # cleared since: a fresh gradient from here on
                self._chain.pop(i, None)
            return None

        return hook

    def pre_step(self):
        """The step uses ``.grad``: stale where it is still the chain's tensor."""
        params, chain = self.ctx.params, self._chain
        for i in self._seen:
            link, g = chain.get(i), params[i].grad
            # cleared to None since (the weakref then is dead too: None is None)
            self._flags[i] = 1 if link is not None and g is not None and link[0]() is g else 0

    def snapshot(self):
        flags, self._flags = self._flags, {}
        return flags

    def decode(self, step: HostStep, flags):
        values = np.full(len(self.ctx.params), np.nan)
        for i, v in (flags or {}).items():
            values[i] = v
        step.data.layers[DKeys.GRAD_STALE] = LayerValues(self.ctx.param_names, values)
