"""The order in which leaf modules run in the forward pass (model order can differ from it).

Rules that reason about depth ("the early layers' gradients", "the output layer") need the
execution order, which ``named_modules()`` does not give for models that define their head
before their body. Recorded as :attr:`DKeys.FORWARD_ORDER`, one value per leaf module: its rank
among the modules called in the step (0 = first), NaN if it was not called. Host-side only.
"""

from __future__ import annotations

import numpy as np

from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import DKeys


class ForwardOrder(Instrument):
    name = "forward_order"
    default_schedule = 100

    def begin_step(self, step):
        self._rank: dict = {}

    def forward(self, index, module, output):
        if index not in self._rank:
            self._rank[index] = len(self._rank)

    def snapshot(self):
        return self._rank

    def decode(self, step: HostStep, rank):
        if rank:
            values = np.full(len(self.ctx.modules), np.nan)
            for i, r in rank.items():
                values[i] = r
            step.data.layers[DKeys.FORWARD_ORDER] = LayerValues(self.ctx.module_names, values)
