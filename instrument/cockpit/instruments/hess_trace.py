"""HessTrace: the trace of the Hessian per parameter tensor (the sum of its diagonal curvature,
see ``Preset(curvature=...)``) and over all parameters, from the curvature probe."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit.instruments.base import ProbeInstrument
from instrument.store.schema import CockpitKeys


class HessTrace(ProbeInstrument):
    name = "hess_trace"
    PROBE = ("diag",)
    COLUMNS = ("trace",)

    def row(self, st, cap, pidx):
        return [self.curv.diag[pidx].sum(dtype=torch.float64)]

    def finish(self, step, rows, B, extra, info):
        tr = rows[:, 0]
        have = ~np.isnan(tr)
        self.layer_values(step, CockpitKeys.HESS_TRACE, tr,
                          CockpitKeys.total(CockpitKeys.HESS_TRACE),
                          float(tr[have].sum()) if have.any() else None)


