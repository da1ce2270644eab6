"""Gradient norms: per parameter and the global L2 norm.

Taken in the optimizer's pre-step hook, when gradients are final: averaged by DDP, unscaled by a
GradScaler, clipped if the loop clips. Never from per-parameter autograd hooks, which under DDP
see local, un-averaged gradients. A parameter without a gradient records NaN ("not recorded").
"""

from __future__ import annotations

import numpy as np

from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import Keys
from instrument.tensorops import IndexCache, local, norms, write_at


class GradNorm(Instrument):
    name = "grad_norm"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return bool(ctx.params)

    def setup(self, buffer):
        n = len(self.ctx.params)
        self.l2 = buffer.add("grad_norm", n, reduce="norm")
        self.cache = IndexCache(buffer.device)

    def begin_step(self, step):
        self._present = []

    def pre_step(self):
        idx, grads = [], []
        for i, p in enumerate(self.ctx.params):
            if p.grad is not None:
                idx.append(i)
                grads.append(local(p.grad))
        self._present = idx
        write_at(self.l2.view, self.cache, idx, norms(grads, 2.0))

    def snapshot(self):
        return self._present

    def decode(self, step: HostStep, present):
        step.extra["grad_present"] = present
        l2 = step.section("grad_norm")
        names = self.ctx.param_names
        step.data.layers[Keys.GRAD_NORM] = LayerValues(names, l2)
        have = ~np.isnan(l2)
        if have.any():
            step.data.scalars[Keys.GRAD_NORM_TOTAL] = float(np.sqrt(np.sum(l2[have] ** 2)))
