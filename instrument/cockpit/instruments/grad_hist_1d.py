"""GradHist1d: histogram of all individual gradient elements (Cockpit's default: 100 bins on
[-2, 2], outliers in the edge bins), for all parameters together and per parameter.

Stored as layer-like series whose "layers" are bins (labels = left edges, see
``schema.HistogramBins``): ``cockpit/grad_hist_1d`` and ``cockpit/grad_hist_1d/<param>``.
"""

from __future__ import annotations

import numpy as np

from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import CockpitInstrument
from instrument.instruments.base import HostStep
from instrument.store.records import LayerValues
from instrument.store.schema import CockpitKeys, HistogramBins
from instrument.tensorops import IndexCache, write_at


class GradHist1d(CockpitInstrument):
    name = "grad_hist_1d"

    def setup(self, buffer):
        spec = self.engine.specs.h1
        self.sec = buffer.add("cockpit_grad_hist_1d", (len(self.ctx.params), spec.bins),
                              reduce="replicated")
        self.labels = HistogramBins.labels_1d(spec.lo, spec.hi, spec.bins)
        self.cache = IndexCache(buffer.device)

    def begin_step(self, step):
        super().begin_step(step)
        self.engine.request(step, (K.HIST1D,))

    def pre_step(self):
        cap = self.capture()
        if cap is None:
            return
        idx = [i for i in sorted(cap.params) if cap.params[i].hist1d is not None]
        write_at(self.sec.view, self.cache, idx, [cap.params[i].hist1d for i in idx])

    def decode(self, step: HostStep, info):
        self.decode_notes(step, info)
        counts = step.section("cockpit_grad_hist_1d")
        have = ~np.isnan(counts[:, 0])
        if not have.any():
            return
        step.data.layers[CockpitKeys.GRAD_HIST_1D] = LayerValues(self.labels,
                                                                 counts[have].sum(0))
        for i in np.flatnonzero(have):
            step.data.layers[CockpitKeys.hist_1d_of(self.ctx.param_names[i])] = LayerValues(
                self.labels, counts[i])
