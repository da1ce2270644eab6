"""TICDiag: the Takeuchi Information Criterion with a diagonal curvature (Thomas et al. 2019),
``sum_j M_j / (h_j + eps)`` with the uncentered gradient second moment
``M_j = (1/B) sum_i (d_j loss_i)^2`` and the diagonal curvature ``h``. Per parameter (sum over
its elements) and in total."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit import constants as C
from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import ProbeInstrument
from instrument.store.schema import CockpitKeys


class TICDiag(ProbeInstrument):
    name = "tic_diag"
    STATS = (K.SGS,)
    PROBE = ("diag",)
    COLUMNS = ("tic",)

    def row(self, st, cap, pidx):
        if st is None or st.sgs is None:
            return None
        h = self.curv.diag[pidx]
        M = st.sgs / cap.B
        return [(M / (h + C.TIC_EPS)).sum(dtype=torch.float64)]

    def finish(self, step, rows, B, extra, info):
        v = rows[:, 0]
        have = ~np.isnan(v)
        self.layer_values(step, CockpitKeys.TIC_DIAG, v, CockpitKeys.total(CockpitKeys.TIC_DIAG),
                          float(v[have].sum()) if have.any() else None)
