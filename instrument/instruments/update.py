"""Update size per parameter: ||dw||, the update/weight ratio ||dw||/||w|| and the measured
effective learning rate ||dw||/||g||.

How ||dw|| is obtained, cheapest first:

* SGD with momentum (not Nesterov): the step is exactly ``-lr * momentum_buffer`` (weight decay
  and dampening are inside the buffer), so ``||dw|| = lr * ||buffer||``: no parameter copy.
* any other optimizer: the parameters are copied in the pre-step hook and subtracted in the
  post-step hook (exact for every optimizer, one extra parameter copy during the step).
* no optimizer (``monitor.step()`` loops): the difference to the parameters at the previous step.

The ratio and the effective LR use the ``weight_norm`` and ``grad_norm`` of the same step, so
they are recorded when those instruments ran too.
"""

from __future__ import annotations

import numpy as np
import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import Keys
from instrument.tensorops import IndexCache, local, norms, write_at


def _uses_momentum_buffer(optimizer, group) -> bool:
    return (type(optimizer) is torch.optim.SGD and group.get("momentum", 0) > 0
            and not group.get("nesterov", False))


class Update(Instrument):
    name = "update"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return bool(ctx.params)

    def setup(self, buffer):
        self.norm = buffer.add("update_norm", len(self.ctx.params), reduce="norm")
        self.cache = IndexCache(buffer.device)
        self._prev = None  # manual mode: parameters at the previous step

    def pre_step(self):
        ctx, opt = self.ctx, self.ctx.optimizer
        self._momentum, self._snap_idx, self._snap = [], [], None
        if opt is None:
            return
        momentum = [_uses_momentum_buffer(opt, g) for g in opt.param_groups]
        lrs = [g["lr"] for g in opt.param_groups]
        for i in ctx.opt_params:
            gi = ctx.group_of[i]
            if momentum[gi]:
                if ctx.params[i].grad is not None:  # SGD skips parameters without a gradient
                    self._momentum.append((i, lrs[gi]))
            else:
                self._snap_idx.append(i)
        if self._snap_idx:
            # _foreach_mul by 1.0 is an exact copy of all tensors in one fused launch (the
            # monitor runs hooks under no_grad)
            self._snap = torch._foreach_mul([local(ctx.params[i]) for i in self._snap_idx], 1.0)

    def post_step(self):
        ctx = self.ctx
        if ctx.optimizer is None:
            return self._post_manual()
        idx, vals = [], []
        if self._momentum:
            state = ctx.optimizer.state
            pairs = [(i, lr, state[ctx.params[i]].get("momentum_buffer"))
                     for i, lr in self._momentum]
            pairs = [(i, lr, b) for i, lr, b in pairs if b is not None]
            if pairs:
                n = norms([local(b) for _, _, b in pairs])
                torch._foreach_mul_(n, [lr for _, lr, _ in pairs])
                idx += [i for i, _, _ in pairs]
                vals += n
        if self._snap is not None:
            torch._foreach_sub_(self._snap, [local(ctx.params[i]) for i in self._snap_idx])
            idx += self._snap_idx
            vals += norms(self._snap)
            self._snap = None  # free the copy right away
        if idx:
            order = sorted(range(len(idx)), key=idx.__getitem__)
            write_at(self.norm.view, self.cache, [idx[k] for k in order],
                     [vals[k] for k in order])

    def _post_manual(self):
        params = [local(p) for p in self.ctx.params]
        if self._prev is not None:
            diff = torch._foreach_sub(params, self._prev)
            write_at(self.norm.view, self.cache, list(range(len(params))), norms(diff))
        self._prev = torch._foreach_mul(params, 1.0)

    def decode(self, step: HostStep, info):
        upd = step.section("update_norm")
        names = self.ctx.param_names
        layers = step.data.layers
        layers[Keys.UPDATE_NORM] = LayerValues(names, upd)
        have = ~np.isnan(upd)
        if not have.any():
            return
        total = float(np.sqrt(np.sum(upd[have] ** 2)))
        step.data.scalars[Keys.UPDATE_NORM_TOTAL] = total
        with np.errstate(divide="ignore", invalid="ignore"):
            if Keys.WEIGHT_NORM in layers:
                w = layers[Keys.WEIGHT_NORM].values
                layers[Keys.UPDATE_RATIO] = LayerValues(names, upd / w)
                w_total = float(np.sqrt(np.sum(w[have] ** 2)))
                if w_total > 0:
                    step.data.scalars[Keys.UPDATE_RATIO_TOTAL] = total / w_total
            if Keys.GRAD_NORM in layers:
                layers[Keys.EFFECTIVE_LR] = LayerValues(names, upd / layers[Keys.GRAD_NORM].values)
