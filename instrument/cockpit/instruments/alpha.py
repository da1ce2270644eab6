"""Alpha: the effective relative step size of Cockpit (Schneider et al. 2021, section 3).

Along the update ``d = theta(t+1) - theta(t)`` of length ``s``, a quadratic
``q(x) = mu0 + mu1 x + mu2 x^2`` is fitted by weighted least squares to four noisy
observations: the mini-batch loss and slope ``d . g / s`` at ``x = 0`` (step ``t``'s batch) and
at ``x = s`` (step ``t + 1``'s batch), each weighted by the inverse sample variance of its
per-sample values (losses, projections ``d . g_i / s``). Then ``alpha = s / x* - 1`` with the
fit's minimum ``x* = -mu1 / (2 mu2)``: -1 means no progress, 0 a step onto the valley floor, 1 a
step to the opposite slope at the same height; a concave fit gives -1 (Cockpit's convention).

It needs two consecutive steps, so the instrument also runs on the step after each scheduled
one, and the value is stored under the step where the update started (``HostStep.late``, as
the one-column layer series ``cockpit/alpha``: scalar rows are written once per step). The
projections come from the per-sample engine without individual gradients: at step ``t`` the
layers' ``(input, output gradient)`` pairs are kept until the optimizer has stepped (then
``d`` is known); at ``t + 1`` they are projected onto ``d`` inside the backward pass. Layers the
engine does not support are left out of ``d`` and the projections (a note says which).
Needs an optimizer (``monitor.step()`` loops update before the monitor could see ``theta(t)``).
"""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit import constants as C
from instrument.cockpit.instruments.base import CockpitInstrument
from instrument.instruments.base import HostStep
from instrument.schedules import Schedule
from instrument.store.records import LayerValues, StepData
from instrument.store.schema import CockpitKeys
from instrument.tensorops import local


def _moments(losses: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
    """``[mean, sample variance]`` of the losses and of the projections (float64, device)."""
    l, p = losses.double(), proj.double()
    return torch.stack([l.mean(), l.var(), p.mean(), p.var()])


def fit_alpha(start: np.ndarray, end: np.ndarray) -> float | None:
    """Alpha from ``start = [f, var_f, df, var_df, s]`` and ``end = [f, var_f, df, var_df]``;
    None if the fit is undefined (no step, or a singular system)."""
    f0, vf0, df0, vdf0, s = (float(v) for v in start)
    f1, vf1, df1, vdf1 = (float(v) for v in end)
    if not np.isfinite([f0, vf0, df0, vdf0, s, f1, vf1, df1, vdf1]).all() or s <= 0:
        return None
    variances = np.array([vf0, vf1, vdf0, vdf1])
    variances[variances == 0] = C.ALPHA_VARIANCE_FLOOR
    phi = np.array([[1.0, 0.0, 0.0], [1.0, s, s * s], [0.0, 1.0, 0.0], [0.0, 1.0, 2 * s]])
    y = np.array([f0, f1, df0, df1])
    w = 1.0 / variances
    try:
        mu = np.linalg.solve(phi.T @ (w[:, None] * phi), phi.T @ (w * y))
    except np.linalg.LinAlgError:
        return None
    if mu[2] < 0:
        return -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = 2 * s / (-mu[1] / mu[2]) - 1
    return float(alpha) if np.isfinite(alpha) else None


class Alpha(CockpitInstrument):
    name = "alpha"

    @classmethod
    def applies(cls, ctx):
        return ctx.optimizer is not None

    def run_schedule(self, schedule):
        self._user = schedule
        return Schedule(lambda s: schedule(s) or (s > 0 and schedule(s - 1)),
                        f"{schedule!r} (and the step after each)")

    def setup(self, buffer):
        self.start_sec = buffer.add("cockpit_alpha_start", 5, reduce="replicated")
        self.end_sec = buffer.add("cockpit_alpha_end", 4, reduce="replicated")
        self._user = getattr(self, "_user", None) or (lambda s: True)
        self._pending = None  # training thread: the started measurement
        self._host = None  # writer thread: (step, wall time, start values)
        self._column = [CockpitKeys.ALPHA_COLUMN]
        self._params = sorted({i for layer in self.engine.layers.values() for i in layer.params
                               if i in set(self.ctx.opt_params)})

    def begin_step(self, step):
        super().begin_step(step)
        self._start = bool(self._user(step)) and bool(self._params)
        p = self._pending
        self._end = p is not None and p["step"] == step - 1
        if not self._end:
            self._pending = None
        if self._start:
            self.engine.request(step, keep=True, losses=True)
        if self._end:
            self.engine.request(step, direction=p["d"], losses=True)
        self._snap = None
        self._did_start = self._did_end = False

    def pre_step(self):
        cap = self.capture()
        if self._end:
            p, self._pending = self._pending, None
            if (cap is not None and cap.losses is not None and cap.proj is not None
                    and cap.proj_params == p["covered"]):
                self.end_sec.view.copy_(_moments(cap.losses, cap.proj / p["s"]))
                self._did_end = True
        if self._start and cap is not None and cap.losses is not None:
            with torch.no_grad():
                self._snap = torch._foreach_mul(
                    [local(self.ctx.params[i].detach()) for i in self._params], 1.0)

    def post_step(self):
        if self._snap is None:
            return
        cap = self.engine.capture_for(self._step)
        with torch.no_grad():
            diffs = torch._foreach_sub([local(self.ctx.params[i].detach())
                                        for i in self._params], self._snap)
        self._snap = None
        d = dict(zip(self._params, diffs))
        proj, covered = self.engine.project_kept(cap, d)
        if proj is None:
            return
        keep = sorted(covered)
        s = torch.stack([torch.dot(d[i].reshape(-1), d[i].reshape(-1)).double()
                         for i in keep]).sum().sqrt()
        self.start_sec.view.copy_(torch.cat([_moments(cap.losses, proj / s), s.reshape(1)]))
        self._pending = {"step": self._step, "d": {i: d[i] for i in keep}, "s": s,
                         "covered": set(keep)}
        self._did_start = True

    def snapshot(self):
        info = super().snapshot()
        info.update(start=self._did_start, end=self._did_end)
        return info

    def decode(self, step: HostStep, info):
        self.decode_notes(step, info)
        host, self._host = self._host, None
        if info.get("end") and host is not None and host[0] == step.step - 1:
            t, wall, start = host
            alpha = fit_alpha(start, step.section("cockpit_alpha_end"))
            if alpha is not None:
                step.late.append(StepData(t, wall, layers={CockpitKeys.ALPHA: LayerValues(
                    self._column, np.array([alpha]))}))
        if info.get("start"):
            self._host = (step.step, step.data.wall_time,
                          step.section("cockpit_alpha_start").copy())
