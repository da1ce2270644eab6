"""EarlyStopping: the evidence-based criterion of Mahsereci et al. 2017 (eq. 7),
``1 - B * mean_j g_j^2 / (sigma_j^2 + eps)`` with the sample variance ``sigma_j^2`` of the
individual gradients; stop when it is above 0. Per parameter and over all elements. The
criterion is derived for plain SGD; avionics computes it for any optimizer."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit import constants as C
from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import RowsInstrument, ratio
from instrument.store.schema import CockpitKeys


class EarlyStopping(RowsInstrument):
    name = "early_stopping"
    STATS = (K.SGS, K.MEAN)
    COLUMNS = ("sum_snr", "count")

    def row(self, st, cap, pidx):
        if st is None or st.sgs is None or st.mean is None or cap.B < 2:
            return None
        B = cap.B
        g2 = st.mean * st.mean
        var = (st.sgs - B * g2) / (B - 1)
        return [(g2 / (var + C.EARLY_STOPPING_EPS)).sum(dtype=torch.float64),
                float(g2.numel())]

    def finish(self, step, rows, B, extra, info):
        s, n = rows[:, 0], rows[:, 1]
        have = ~np.isnan(s)
        total = float(1 - B * s[have].sum() / n[have].sum()) if have.any() else None
        self.layer_values(step, CockpitKeys.EARLY_STOPPING, 1 - B * ratio(s, n),
                          CockpitKeys.total(CockpitKeys.EARLY_STOPPING), total)
