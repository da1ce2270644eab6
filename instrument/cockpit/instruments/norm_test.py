"""NormTest (Byrd et al. 2012, eq. 3.9): the smallest ``theta`` for which the mini-batch passes
the norm test, ``sqrt(Var_i(g_i) / (B ||g||^2))`` with the sample variance
``sum_i ||g_i - g||^2 / (B - 1)``. Per parameter (individual gradients of that tensor) and for
all of them together. Large values: the batch gradient is dominated by noise (grow the batch).
"""

from __future__ import annotations

import numpy as np

from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import RowsInstrument, safe_sqrt_ratio
from instrument.store.schema import CockpitKeys


class NormTest(RowsInstrument):
    name = "norm_test"
    STATS = (K.SQ, K.INNER)
    COLUMNS = ("sum_sq", "g_sq")

    def row(self, st, cap, pidx):
        if st.sq is None or st.gsq is None:
            return None
        return [st.sq, st.gsq]

    def finish(self, step, rows, B, extra, info):
        sq, gsq = rows[:, 0], rows[:, 1]
        per = safe_sqrt_ratio((sq - B * gsq) / (B - 1), B * gsq)
        have = ~np.isnan(sq)
        total = safe_sqrt_ratio((sq[have].sum() - B * gsq[have].sum()) / (B - 1),
                                B * gsq[have].sum()) if have.any() else None
        self.layer_values(step, CockpitKeys.NORM_TEST, per,
                          CockpitKeys.total(CockpitKeys.NORM_TEST), total)
