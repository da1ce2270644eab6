"""HessMaxEV: the largest eigenvalue of the mini-batch loss's Hessian, by Lanczos on
Hessian-vector products (double backward through the replayed step), warm-started from the
previous tracked step's top Ritz vector and run until its error bound is below the tolerance.

The convergence report is stored with it: ``cockpit/hess_max_ev/bound`` (how far the largest
eigenvalue may lie above the estimate, relative; :func:`instrument.cockpit.lanczos.ritz`),
``.../residual`` (``||Hv - lv|| / |l|``) and ``.../iterations``. A step whose bound exceeds the
tolerance (the cap on products came first) gets a ``cockpit_not_converged`` event: its estimate
may be low by more than the documented accuracy. The residual alone cannot say so: some
eigenvalue always lies within it, but on a Hessian whose top two eigenvalues are close that is
often the second one, with the estimate 10 % below the top one and the residual under 10 %."""

from __future__ import annotations

import numpy as np

from instrument.cockpit import constants as C
from instrument.cockpit.instruments.base import ProbeInstrument
from instrument.cockpit.lanczos import ritz
from instrument.store import schema
from instrument.store.schema import CockpitKeys


class HessMaxEV(ProbeInstrument):
    name = "hess_max_ev"
    PROBE = ("hvp",)
    COLUMNS = ()

    def setup(self, buffer):
        self.k = 2 * self.options.lanczos_iterations  # room for a cold start's iterations
        self.sec = buffer.add("cockpit_hess_max_ev", (2, self.k), reduce="replicated")
        self.probe.setup()
        self._failing = False

    def pre_step(self):
        cap = self.capture()
        if cap is None:
            return
        self._B = cap.B
        r = self.probe.result(self._step)
        if r is not None and r.alphas is not None:
            n = r.alphas.shape[0]
            self.sec.view[0, :n].copy_(r.alphas)
            self.sec.view[1, :n].copy_(r.betas)

    def decode(self, step, info):
        self.decode_notes(step, info)
        ab = step.section("cockpit_hess_max_ev")
        n = int(np.sum(~np.isnan(ab[0])))
        if n == 0:
            return
        est = ritz(ab[0, :n], ab[1, :n])
        scale = abs(est.theta)
        rel = est.residual / scale if scale > 0 else float("inf")
        bound = est.bound / scale if scale > 0 else float("inf")
        s = step.data.scalars
        s[CockpitKeys.HESS_MAX_EV] = est.theta
        s[CockpitKeys.HESS_MAX_EV_RESIDUAL] = rel
        s[CockpitKeys.HESS_MAX_EV_BOUND] = bound
        s[CockpitKeys.HESS_MAX_EV_ITERATIONS] = float(n)
        failing = not bound <= C.HESS_MAX_EV_TOLERANCE
        if failing and not self._failing:
            step.events.append(self.event(
                schema.COCKPIT_NOT_CONVERGED, schema.INFO,
                f"The Hessian's largest eigenvalue ({est.theta:.4g}) did not converge in {n} "
                f"Hessian-vector products at step {step.step}: it may be up to {bound:.2g} "
                f"(relative) low, more than the tolerance {C.HESS_MAX_EV_TOLERANCE} (residual "
                f"{rel:.2g}). Later steps start from this estimate and usually converge; if "
                "this repeats, raise the cap: preset=Preset(..., lanczos_iterations=...).",
                step.step, None, bound=bound, residual=rel, iterations=n))
        self._failing = failing
