"""MeanGSNR: the mean gradient signal-to-noise ratio (Liu et al. 2020),
``mean_j g_j^2 / (Var_i(d_j loss_i) + eps)`` with the population variance over the batch, as
Cockpit computes it. Per parameter (mean over its elements) and over all elements."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit import constants as C
from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import RowsInstrument, ratio
from instrument.store.schema import CockpitKeys


class MeanGSNR(RowsInstrument):
    name = "mean_gsnr"
    STATS = (K.SGS, K.MEAN)
    COLUMNS = ("sum_gsnr", "count")

    def row(self, st, cap, pidx):
        if st is None or st.sgs is None or st.mean is None:
            return None
        g2 = st.mean * st.mean
        gsnr = g2 / (st.sgs / cap.B - g2 + C.GSNR_EPS)
        return [gsnr.sum(dtype=torch.float64), float(g2.numel())]

    def finish(self, step, rows, B, extra, info):
        s, n = rows[:, 0], rows[:, 1]
        have = ~np.isnan(s)
        total = float(s[have].sum() / n[have].sum()) if have.any() else None
        self.layer_values(step, CockpitKeys.MEAN_GSNR, ratio(s, n),
                          CockpitKeys.total(CockpitKeys.MEAN_GSNR), total)
