"""TICTrace: the Takeuchi Information Criterion with traces (Thomas et al. 2019),
``sum_j M_j / (sum_j h_j + eps)`` (``M`` and ``h`` as in TICDiag). Per parameter and in total
(sums over all parameters' elements)."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit import constants as C
from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import ProbeInstrument, ratio
from instrument.store.schema import CockpitKeys


class TICTrace(ProbeInstrument):
    name = "tic_trace"
    STATS = (K.SGS,)
    PROBE = ("diag",)
    COLUMNS = ("sum_M", "sum_h")

    def row(self, st, cap, pidx):
        if st is None or st.sgs is None:
            return None
        return [(st.sgs / cap.B).sum(dtype=torch.float64),
                self.curv.diag[pidx].sum(dtype=torch.float64)]

    def finish(self, step, rows, B, extra, info):
        m, h = rows[:, 0], rows[:, 1]
        have = ~np.isnan(m)
        total = float(m[have].sum() / (h[have].sum() + C.TIC_EPS)) if have.any() else None
        self.layer_values(step, CockpitKeys.TIC_TRACE, ratio(m, h + C.TIC_EPS),
                          CockpitKeys.total(CockpitKeys.TIC_TRACE), total)
