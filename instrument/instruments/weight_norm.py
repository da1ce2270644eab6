"""Weight norms per parameter (after the optimizer step) and their global L2 norm."""

from __future__ import annotations

import numpy as np

from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import Keys
from instrument.tensorops import IndexCache, local, norms, write_at


class WeightNorm(Instrument):
    name = "weight_norm"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return bool(ctx.params)

    def setup(self, buffer):
        self.l2 = buffer.add("weight_norm", len(self.ctx.params), reduce="norm")
        self.cache = IndexCache(buffer.device)
        self.all = list(range(len(self.ctx.params)))

    def post_step(self):
        # the monitor runs hooks under no_grad: parameters need no detach()
        write_at(self.l2.view, self.cache, self.all,
                 norms([local(p) for p in self.ctx.params], 2.0))

    def decode(self, step: HostStep, info):
        l2 = step.section("weight_norm")
        step.data.layers[Keys.WEIGHT_NORM] = LayerValues(self.ctx.param_names, l2)
        have = ~np.isnan(l2)
        if have.any():
            step.data.scalars[Keys.WEIGHT_NORM_TOTAL] = float(np.sqrt(np.sum(l2[have] ** 2)))
