"""CABS: the batch size suggested by the CABS rule (Balles et al. 2017, eq. 22),
``lr * tr(Sigma) / L`` with the per-sample gradient covariance's trace
``tr(Sigma) = sum_j (sum_i (d_j loss_i)^2 - B g_j^2) / B`` and the mini-batch loss ``L``. Per
parameter (with its param group's learning rate) and in total. The rule is derived for SGD
without momentum; for other optimizers a note is stored once and the value still uses each
group's learning rate."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit import kernels as K
from instrument.cockpit.instruments.base import RowsInstrument
from instrument.store import schema
from instrument.store.schema import CockpitKeys


class CABS(RowsInstrument):
    name = "cabs"
    STATS = (K.SGS, K.MEAN)
    COLUMNS = ("trace_sigma_B",)
    GLOBAL = 1  # the mini-batch loss

    @classmethod
    def applies(cls, ctx):
        return ctx.optimizer is not None  # needs the learning rate

    def request_extra(self):
        return {"losses": True}

    def setup(self, buffer):
        super().setup(buffer)
        opt = self.ctx.optimizer
        self._plain_sgd = type(opt) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 for g in opt.param_groups)
        self._warned = False

    def row(self, st, cap, pidx):
        if st is None or st.sgs is None or st.mean is None:
            return None
        return [(st.sgs - cap.B * st.mean * st.mean).sum(dtype=torch.float64)]

    def global_values(self, cap):
        return None if cap.losses is None else [cap.losses.mean()]

    def snapshot(self):
        info = super().snapshot()
        groups = self.ctx.optimizer.param_groups
        info["lr"] = {i: _number(groups[g]["lr"]) for i, g in self.ctx.group_of.items()}
        return info

    def finish(self, step, rows, B, extra, info):
        if not self._plain_sgd and not self._warned:
            self._warned = True
            step.events.append(self.event(
                schema.COCKPIT_UNSUPPORTED, schema.INFO,
                f"CABS is derived for SGD without momentum; with "
                f"{type(self.ctx.optimizer).__name__} its values use each parameter group's "
                "learning rate and read as a rough guide only.", step.step, None,
                optimizer=type(self.ctx.optimizer).__name__))
        x = rows[:, 0]
        lr = np.array([info["lr"].get(i, np.nan) for i in range(len(x))])
        loss = extra[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            per = lr * x / (B * loss)
        have = ~np.isnan(per)
        total = float(per[have].sum()) if have.any() else None
        self.layer_values(step, CockpitKeys.CABS, per, CockpitKeys.total(CockpitKeys.CABS), total)


def _number(v) -> float:
    if isinstance(v, torch.Tensor):
        return float(v) if v.device.type == "cpu" else float("nan")
    return float(v)
