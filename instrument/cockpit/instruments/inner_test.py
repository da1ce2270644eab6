"""InnerTest (Bollapragada et al. 2017, eq. 2.6): ``sqrt(Var_i(g_i . g) / (B ||g||^4))`` with
the sample variance of the projections ``p_i = g_i . g`` (their mean is ``||g||^2``). Per
parameter (``g_i``, ``g`` restricted to it) and for all parameters (``p_i`` summed over them).
"""

from __future__ import annotations

import numpy as np

from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import RowsInstrument, safe_sqrt_ratio
from instrument.store.schema import CockpitKeys


class InnerTest(RowsInstrument):
    name = "inner_test"
    STATS = (K.INNER,)
    COLUMNS = ("sum_p_sq", "g_sq")
    GLOBAL = 1  # sum_i (sum_l p_il)^2

    def row(self, st, cap, pidx):
        if st.p is None:
            return None
        return [(st.p * st.p).sum(), st.gsq]

    def global_values(self, cap):
        return None if cap.p_total is None else [(cap.p_total ** 2).sum()]

    def finish(self, step, rows, B, extra, info):
        psq, gsq = rows[:, 0], rows[:, 1]
        per = safe_sqrt_ratio((psq - B * gsq ** 2) / (B - 1), B * gsq ** 2)
        have = ~np.isnan(psq)
        total = None
        if have.any():
            G = gsq[have].sum()
            total = safe_sqrt_ratio((extra[0] - B * G ** 2) / (B - 1), B * G ** 2)
        self.layer_values(step, CockpitKeys.INNER_TEST, per,
                          CockpitKeys.total(CockpitKeys.INNER_TEST), total)
