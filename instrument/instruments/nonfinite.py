"""NaN/Inf events with their origin: the loss, the FIRST module in forward order whose output
went non-finite, the first parameter in backward order whose gradient did, and parameters that
became non-finite after an update.

Every step, each leaf module's output is summed in float32 (one reduction); the sum is
non-finite exactly when the output holds a NaN or an Inf (float32 sums of finite float32/half
values do not overflow in practice). Elementwise modules that cannot turn finite inputs into
non-finite outputs (:data:`SAFE_TYPES`) are skipped: their inputs are checked upstream.
Gradients and parameters use the L2 norms of the ``grad_norm`` and ``weight_norm``
instruments: a NaN element makes the norm NaN, an Inf element makes it +Inf (so do float32
values beyond about 1e19, whose squares overflow; messages say so), and the loss is the value passed to ``monitor.log(loss=...)``. The backward order of
parameters is recorded by post-accumulate-grad hooks that only note the order (no values).

One event per tensor kind is stored when it turns non-finite (not on every following step); if
it recovers (e.g. a GradScaler skipped the step) and fails again, a new event is stored.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from instrument.instruments.base import HostStep, Instrument
from instrument.modules import float_tensors
from instrument.store import schema
from instrument.store.schema import Keys

SAFE_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
              nn.Dropout3d, nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
              nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Identity,
              nn.Flatten, nn.Unflatten, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid,
              nn.Softsign, nn.Threshold)

ORDER_EVERY = 100
"""Steps between recordings of the backward order of the parameters."""

SUGGESTION = ("Look at the named module's inputs and weights at this step: lower the learning "
              "rate, add gradient clipping or warm-up, check the data for NaN/Inf, and guard "
              "log/sqrt/division against zero or negative arguments.")


class NonFinite(Instrument):
    name = "nonfinite"
    default_schedule = 1

    def setup(self, buffer):
        self.sec = buffer.add("fwd_sums", len(self.ctx.modules), fill=0.0, reduce="sum")
        self.checked = [not isinstance(m, SAFE_TYPES) for m in self.ctx.modules]
        self._bad = {}  # writer thread: tensor kind -> currently non-finite?
        self._idx = {}
        self._grad_order: list = []  # the last recorded backward order (parameter indices)
        self._recording, self._grad_hooks = None, []  # the order being recorded, its hooks
        self._order_step = None  # the step it was last recorded at

    def attach(self):
        return [self]  # remove(): the monitor's close() drops hooks still registered

    def remove(self):
        for h in self._grad_hooks:
            h.remove()
        self._grad_hooks = []

    def _grad_hook(self, i, seen, order):
        def hook(param):
            if i not in seen:
                seen.add(i)
                order.append(i)
        return hook

    def begin_step(self, step):
        self._order, self._seen = [], set()
        self._pending_idx, self._pending = [], []
        if self._order_step is None or step - self._order_step >= ORDER_EVERY:
            self.remove()
            seen, self._recording = set(), []
            self._grad_hooks = [
                p.register_post_accumulate_grad_hook(self._grad_hook(i, seen, self._recording))
                for i, p in enumerate(self.ctx.params) if p.requires_grad]
            self._order_step = step

    def forward(self, index, module, output):
        if index not in self._seen:
            self._seen.add(index)
            self._order.append(index)
        if self.checked[index]:
            tensors = (output,) if isinstance(output, torch.Tensor) else float_tensors(output)
            for t in tensors:
                if t.is_floating_point():
                    self._pending_idx.append(index)
                    self._pending.append(torch.sum(t, dtype=torch.float32))

    def end_step(self):
        if self._pending:
            key = tuple(self._pending_idx)
            view = self.sec.view
            idx = self._idx.get(key)
            if idx is None:
                if len(self._idx) > 64:  # call patterns that never repeat: stay bounded
                    self._idx.clear()
                idx = self._idx[key] = torch.tensor(key, device=view.device)
            device = view.device
            sums = torch.stack([s if s.device == device else s.to(device)
                                for s in self._pending])
            view.index_add_(0, idx, sums.to(view.dtype))
        self._pending_idx, self._pending = [], []

    def snapshot(self):
        if self._recording is not None:  # a recording step: keep its order, drop the hooks
            if self._recording:
                self._grad_order = self._recording
            self._recording = None
            self.remove()
        return list(self._order), self._grad_order

    def decode(self, step: HostStep, info):
        order, grad_order = info
        names, data, out = self.ctx.module_names, step.data, []
        fwd = step.section("fwd_sums")
        bad_modules = [i for i in order if not np.isfinite(fwd[i])]
        origin = names[bad_modules[0]] if bad_modules else None
        if self._transition("activation", bool(bad_modules)):
            m = self.ctx.modules[bad_modules[0]]
            out.append(self.event(
                schema.NONFINITE, schema.CRITICAL,
                f"Non-finite (NaN/Inf) output first at module '{origin}' "
                f"({type(m).__name__}) at step {step.step}, "
                f"{len(bad_modules)} module(s) affected in this forward pass."
                f"{_between(order, bad_modules[0], names, self.checked)}",
                step.step, origin, tensor="activation",
                modules=[names[i] for i in bad_modules[:20]],
                previous=_previous(order, bad_modules[0], names, self.checked)))
        loss = data.scalars.get(Keys.LOSS)
        loss_bad = loss is not None and not np.isfinite(loss)
        if self._transition("loss", loss_bad):
            where = f"; the forward pass went non-finite first at '{origin}'" if origin else ""
            out.append(self.event(schema.NONFINITE, schema.CRITICAL,
                                  f"The loss is {loss} at step {step.step}{where}.",
                                  step.step, origin, tensor="loss", value=str(loss)))
        out += self._params(step, Keys.GRAD_NORM, "gradient", grad_order, origin)
        out += self._params(step, Keys.WEIGHT_NORM, "parameter", grad_order, origin)
        for e in out:
            e.suggestion = SUGGESTION
        step.events.extend(out)

    def _params(self, step, key, kind, order, origin):
        lv = step.data.layers.get(key)
        if lv is None:
            return []
        vals = lv.values
        if kind == "gradient":  # NaN also means "no gradient": only look at recorded ones
            candidates = step.extra.get("grad_present", ())
        else:
            candidates = range(len(vals))
        rank = self._rank(kind, order)
        bad = sorted((i for i in candidates if not np.isfinite(vals[i])), key=rank)
        if not self._transition(kind, bool(bad)):
            return []
        name = self.ctx.param_names[bad[0]]
        what = ("gradient first (in backward order) at parameter" if kind == "gradient"
                else "values after the optimizer step in parameter")
        value = "NaN" if np.isnan(vals[bad[0]]) else "Inf (or float32 overflow, |x| > ~1e19)"
        tail = f"; the forward pass went non-finite first at '{origin}'" if origin else ""
        return [self.event(schema.NONFINITE, schema.CRITICAL,
                           f"Non-finite {what} '{name}' at step {step.step}: its norm is "
                           f"{value}; {len(bad)} parameter(s) affected{tail}.", step.step,
                           name, tensor=kind,
                           parameters=[self.ctx.param_names[i] for i in bad[:20]])]

    def _rank(self, kind, grad_order):
        """Sort key: model order for parameters; for gradients, the order in which backward
        accumulated them at this step (parameters never accumulated come last)."""
        if kind == "parameter":
            return lambda i: i
        rank = {p: r for r, p in enumerate(grad_order)}
        return lambda i: (rank.get(i, len(rank)), i)

    def _transition(self, kind, bad: bool) -> bool:
        was = self._bad.get(kind, False)
        self._bad[kind] = bad
        return bad and not was


def _previous(order: list, first_bad: int, names: list, checked: list) -> str | None:
    """The last module whose output was checked (and finite) before ``first_bad`` ran in this
    forward pass. Unchecked ones (:data:`SAFE_TYPES`) are skipped: their sums are not taken."""
    pos = order.index(first_bad)
    before = [i for i in order[:pos] if checked[i]]
    return names[before[-1]] if before else None


def _between(order: list, first_bad: int, names: list, checked: list) -> str:
    """Where the NaN/Inf can have arisen: in the module, or in the code that ran since the
    previous checked module (functional operations such as softmax, masking or division are
    not modules, so their outputs are not checked)."""
    prev = _previous(order, first_bad, names, checked)
    name = names[first_bad]
    parent = name.rsplit(".", 1)[0] if "." in name else None
    inside = f" (in '{parent}')" if parent else ""
    if prev is None:
        return (f" No module checked before it in this forward pass: its input (the batch) or "
                f"the computation up to it{inside} is the source.")
    return (f" The last module checked before it, '{prev}', had a finite output: the NaN/Inf "
            f"arose in '{name}' or in the code that ran between the two{inside}; functional "
            f"operations there (softmax, masking, log, division) are not modules and are not "
            f"checked.")
