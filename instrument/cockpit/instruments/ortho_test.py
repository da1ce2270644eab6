"""OrthoTest (Bollapragada et al. 2017, eq. 3.3): the orthogonality test,
``sqrt(Var_i(g_i - (g_i . g / ||g||^2) g) / (B ||g||^2))``: the noise orthogonal to the batch
gradient, relative to it. Per parameter and for all parameters together.
"""

from __future__ import annotations

import numpy as np

from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import RowsInstrument, safe_sqrt_ratio
from instrument.store.schema import CockpitKeys


class OrthoTest(RowsInstrument):
    name = "ortho_test"
    STATS = (K.SQ, K.INNER)
    COLUMNS = ("sum_sq", "sum_p_sq", "g_sq")
    GLOBAL = 1

    def row(self, st, cap, pidx):
        if st.sq is None or st.p is None:
            return None
        return [st.sq, (st.p * st.p).sum(), st.gsq]

    def global_values(self, cap):
        return None if cap.p_total is None else [(cap.p_total ** 2).sum()]

    def finish(self, step, rows, B, extra, info):
        sq, psq, gsq = rows[:, 0], rows[:, 1], rows[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            per = safe_sqrt_ratio((sq - psq / gsq) / (B - 1), B * gsq)
            have = ~np.isnan(sq)
            total = None
            if have.any():
                G = gsq[have].sum()
                total = safe_sqrt_ratio((sq[have].sum() - extra[0] / G) / (B - 1), B * G)
        self.layer_values(step, CockpitKeys.ORTHO_TEST, per,
                          CockpitKeys.total(CockpitKeys.ORTHO_TEST), total)
