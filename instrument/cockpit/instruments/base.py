"""What the Cockpit instruments share: being optional, the engines, and degradation notes."""

from __future__ import annotations

import numpy as np
import torch

from instrument.cockpit.persample import PerSampleEngine
from instrument.instruments.base import HostStep, Instrument
from instrument.store import schema
from instrument.store.records import LayerValues
from instrument.tensorops import IndexCache, write_at


class CockpitInstrument(Instrument):
    """Base of the Cockpit instruments: off unless a preset or a schedule names them, and by
    default every step when on (Cockpit's ``configuration()`` default)."""

    optional = True
    default_schedule = 1
    uses_losses = True
    """Takes the step's loss calls (for the per-sample engine); the monitor captures
    functional losses only on steps where some instrument does."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.engine = PerSampleEngine.of(ctx)
        self.options = self.engine.options
        self._step = -1

    def attach(self):
        return self.engine.attach()

    def begin_step(self, step):
        self._step = step

    def loss_inputs(self, call):
        self.engine.on_loss(call)

    def overrides(self, method: str) -> bool:
        if method == "loss_inputs":
            return self.uses_losses
        return super().overrides(method)

    def capture(self):
        """This step's per-sample capture (hook errors re-raised here), or None."""
        cap = self.engine.capture_for(self._step)
        return cap.finish() if cap is not None else None

    def snapshot(self):
        return {"notes": self.engine.take_notes()}

    def decode_notes(self, step: HostStep, info) -> None:
        for layer, reason, what in (info or {}).get("notes", ()):
            step.events.append(self.event(
                schema.COCKPIT_UNSUPPORTED, schema.INFO,
                f"{what[0].upper() + what[1:]} are not recorded for '{layer}': {reason}.",
                step.step, layer, reason=reason, affects=what))

    def layer_values(self, step: HostStep, key: str, values, total_key=None,
                     total=None) -> None:
        """Store a per-parameter series (NaN = not recorded) and optionally its total."""
        values = np.asarray(values, dtype=np.float64)
        if np.isnan(values).all():
            return
        step.data.layers[key] = LayerValues(self.ctx.param_names, values)
        if total_key is not None and total is not None and np.isfinite(total):
            step.data.scalars[total_key] = float(total)


class RowsInstrument(CockpitInstrument):
    """A per-sample instrument that records ``COLUMNS`` raw sums per parameter on the device
    (``row``) and turns them into its quantity on the host (``finish``).

    ``STATS`` is what the per-sample engine must compute; ``GLOBAL`` the number of extra
    whole-model values (``global_values``), e.g. inner products summed over layers first.
    """

    STATS: tuple = ()
    COLUMNS: tuple = ()
    GLOBAL: int = 0

    def setup(self, buffer):
        n = len(self.ctx.params)
        self.rows = buffer.add(f"cockpit_{self.name}", (n, len(self.COLUMNS)),
                               reduce="replicated")
        self.glob = (buffer.add(f"cockpit_{self.name}_global", self.GLOBAL, reduce="replicated")
                     if self.GLOBAL else None)
        self.cache = IndexCache(buffer.device)

    def begin_step(self, step):
        super().begin_step(step)
        self._B = None
        if self.STATS:
            self.engine.request(step, self.STATS, **self.request_extra())

    def request_extra(self) -> dict:
        return {}

    def indices(self, cap) -> list:
        return sorted(cap.params)

    def pre_step(self):
        cap = self.capture()
        if cap is None:
            return
        self._B = cap.B
        self.before_rows(cap)
        idx, vals = [], []
        for pidx in self.indices(cap):
            row = self.row(cap.params.get(pidx), cap, pidx)
            if row is not None:
                idx.append(pidx)
                dev = self.rows.view.device
                vals.append(torch.stack([torch.as_tensor(v, device=dev).reshape(())
                                         .to(torch.float64) for v in row]))
        write_at(self.rows.view, self.cache, idx, vals)
        if self.glob is not None and idx:
            g = self.global_values(cap)
            if g is not None:
                self.glob.view.copy_(torch.stack([v.reshape(()).double() for v in g]))

    def before_rows(self, cap) -> None:
        """Hook for subclasses: fetch what the rows need (e.g. the probe's result)."""

    def row(self, st, cap, pidx):
        raise NotImplementedError

    def global_values(self, cap):
        return None

    def snapshot(self):
        info = super().snapshot()
        info["B"] = self._B
        return info

    def decode(self, step: HostStep, info):
        self.decode_notes(step, info)
        B = (info or {}).get("B")
        if not B or B < 2:  # one sample has no variance
            return
        rows = step.section(f"cockpit_{self.name}")
        extra = step.section(f"cockpit_{self.name}_global") if self.GLOBAL else None
        self.finish(step, rows, B, extra, info)

    def finish(self, step, rows, B, extra, info):
        raise NotImplementedError


class ProbeInstrument(RowsInstrument):
    """A :class:`RowsInstrument` that also needs the curvature probe (``PROBE``: "diag" or
    "hvp"); ``self.curv`` holds the step's probe result while the rows are built."""

    PROBE: tuple = ()

    def __init__(self, ctx):
        from instrument.cockpit.probe import CurvatureProbe

        super().__init__(ctx)
        self.probe = CurvatureProbe.of(ctx)
        self.curv = None

    def setup(self, buffer):
        super().setup(buffer)
        self.probe.setup()  # copies the model before the monitor registers its hooks

    def begin_step(self, step):
        super().begin_step(step)
        for what in self.PROBE:
            self.probe.request(step, what)

    def before_rows(self, cap):
        self.curv = self.probe.result(self._step)

    def indices(self, cap):
        diag = self.curv.diag if self.curv is not None else {}
        if self.STATS:
            return sorted(i for i in cap.params if i in diag)
        return sorted(diag)


def safe_sqrt_ratio(num, den):
    """``sqrt(max(num, 0) / den)`` elementwise, NaN where ``den`` is 0 or NaN. The numerator is
    a variance written as a difference of sums; rounding can make it slightly negative."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(np.maximum(num, 0.0) / den)
    return np.where(den > 0, out, np.nan)


def ratio(num, den):
    """``num / den`` with NaN instead of warnings where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray(num, dtype=np.float64) / np.asarray(den, dtype=np.float64)
