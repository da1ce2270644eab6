"""Distance: how far each parameter has moved from where it was when ``watch()`` started,
``||theta_l(t) - theta_l(0)||`` (Cockpit's Distance; its start is step 0 of the monitor).

Keeps one copy of the initial parameters (1x model memory); costs one subtraction and one norm
per parameter on tracked steps.
"""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit.instruments.base import CockpitInstrument
from instrument.instruments.base import HostStep, Instrument
from instrument.store.schema import CockpitKeys
from instrument.tensorops import IndexCache, local, norms, write_at


class Distance(CockpitInstrument):
    name = "distance"
    uses_losses = False

    def __init__(self, ctx):
        Instrument.__init__(self, ctx)  # needs no per-sample engine
        self._step = -1

    def attach(self):
        return []

    def snapshot(self):
        return None

    def setup(self, buffer):
        self.sec = buffer.add("cockpit_distance", len(self.ctx.params), reduce="norm")
        self.cache = IndexCache(buffer.device)
        self.idx = [i for i, p in enumerate(self.ctx.params) if p.is_floating_point()]
        with torch.no_grad():
            self.init = torch._foreach_mul([local(self.ctx.params[i].detach()) for i in self.idx],
                                           1.0)

    def pre_step(self):
        with torch.no_grad():
            diffs = torch._foreach_sub([local(self.ctx.params[i].detach()) for i in self.idx],
                                       self.init)
        write_at(self.sec.view, self.cache, self.idx, norms(diffs))

    def decode(self, step: HostStep, info):
        d = step.section("cockpit_distance")
        have = ~np.isnan(d)
        total = float(np.sqrt(np.sum(d[have] ** 2))) if have.any() else None
        self.layer_values(step, CockpitKeys.DISTANCE, d,
                          CockpitKeys.total(CockpitKeys.DISTANCE), total)
