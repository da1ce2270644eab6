"""GradHist2d: 2-D histogram of (individual gradient element, parameter value) pairs over all
parameters (Cockpit's default: 40 x 50 bins on [-1, 1] x [-2, 2], outliers in the edge bins).

Stored as the layer-like series ``cockpit/grad_hist_2d``; bins are labelled
``"<gradient left edge>|<parameter left edge>"``, gradient-major (``schema.HistogramBins``).
"""

from __future__ import annotations

import numpy as np

from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import CockpitInstrument
from instrument.instruments.base import HostStep
from instrument.store.records import LayerValues
from instrument.store.schema import CockpitKeys, HistogramBins


class GradHist2d(CockpitInstrument):
    name = "grad_hist_2d"

    def setup(self, buffer):
        g, p = self.engine.specs.g2, self.engine.specs.p2
        self.sec = buffer.add("cockpit_grad_hist_2d", (g.bins, p.bins), reduce="replicated")
        self.labels = HistogramBins.labels_2d((g.lo, g.hi, g.bins), (p.lo, p.hi, p.bins))

    def begin_step(self, step):
        super().begin_step(step)
        self.engine.request(step, (K.HIST2D,))

    def pre_step(self):
        cap = self.capture()
        if cap is None:
            return
        hists = [s.hist2d for s in cap.params.values() if s.hist2d is not None]
        if hists:
            self.sec.view.copy_(sum(hists[1:], hists[0]))

    def decode(self, step: HostStep, info):
        self.decode_notes(step, info)
        counts = step.section("cockpit_grad_hist_2d")
        if np.isnan(counts).all():
            return
        step.data.layers[CockpitKeys.GRAD_HIST_2D] = LayerValues(self.labels, counts.reshape(-1))
