"""Effective learning rate of adaptive optimizers: the distribution of ``lr / (sqrt(v_hat) + eps)``
over each parameter's elements, from the optimizer's second-moment state.

Recorded per parameter as the 10th percentile, median and 90th percentile. For speed, tensors
larger than :data:`SAMPLE_SIZE` elements are summarized from a fixed random subset of their
elements (chosen once, with a private generator, so the user's RNG stream is untouched);
smaller tensors use every element.
"""

from __future__ import annotations

import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import Keys
from instrument.tensorops import IndexCache, local, write_at

SAMPLE_SIZE = 4096
"""Elements per parameter used for the percentiles (the rank error is about 1/sqrt of this)."""

QUANTILES = (0.1, 0.5, 0.9)

# optimizer class -> (second-moment state key, bias-corrected with beta2?)
SECOND_MOMENT = {
    torch.optim.Adam: ("exp_avg_sq", True),
    torch.optim.AdamW: ("exp_avg_sq", True),
    torch.optim.NAdam: ("exp_avg_sq", True),
    torch.optim.RAdam: ("exp_avg_sq", True),
    torch.optim.RMSprop: ("square_avg", False),
    torch.optim.Adagrad: ("sum", False),
}


def second_moment_kind(optimizer):
    """``(state key, bias corrected)`` for an adaptive optimizer, else None."""
    for cls, kind in SECOND_MOMENT.items():
        if isinstance(optimizer, cls):
            return kind
    return None


class AdaptiveLR(Instrument):
    name = "adaptive_lr"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return bool(ctx.opt_params) and second_moment_kind(ctx.optimizer) is not None

    def setup(self, buffer):
        self.kind = second_moment_kind(self.ctx.optimizer)
        self.sec = buffer.add("adaptive_lr", (len(self.ctx.params), len(QUANTILES)),
                              reduce="shard_local")  # percentiles of shards do not combine
        self.cache = IndexCache(buffer.device)
        self._samples: dict = {}
        self._gen = None
        self._q = None

    def post_step(self):
        key, corrected = self.kind
        opt, ctx = self.ctx.optimizer, self.ctx
        idx, rows = [], []
        for i in ctx.opt_params:
            p = ctx.params[i]
            state = opt.state.get(p)
            if not state or key not in state:
                continue
            group = opt.param_groups[ctx.group_of[i]]
            v = state["max_exp_avg_sq"] if group.get("amsgrad") and "max_exp_avg_sq" in state \
                else state[key]
            v = self._sample(i, local(v).detach().reshape(-1))
            if corrected:
                # 0-d CPU step tensors combine with device tensors without a host sync
                step = state["step"]
                v = v / (1 - group["betas"][1] ** step)
            rows.append(group["lr"] / (v.sqrt() + group["eps"]))
            idx.append(i)
        if not rows:
            return
        padded = torch.nn.utils.rnn.pad_sequence([r.float() for r in rows], batch_first=True,
                                                 padding_value=float("nan"))
        if self._q is None:
            self._q = torch.tensor(QUANTILES, device=padded.device)
        qs = torch.nanquantile(padded, self._q, dim=1).T  # [params, quantiles]
        write_at(self.sec.view, self.cache, idx, list(qs.unbind(0)))

    def _sample(self, i, flat):
        if flat.numel() <= SAMPLE_SIZE:
            return flat
        sel = self._samples.get(i)
        if sel is None or sel.device != flat.device:
            if self._gen is None:
                self._gen = torch.Generator(device=flat.device)
                self._gen.manual_seed(0)
            sel = torch.randint(flat.numel(), (SAMPLE_SIZE,), generator=self._gen,
                                device=flat.device)
            self._samples[i] = sel
        return flat[sel]

    def decode(self, step: HostStep, info):
        q = step.section("adaptive_lr")
        names = self.ctx.param_names
        for col, key in enumerate((Keys.ADAPTIVE_LR_P10, Keys.ADAPTIVE_LR_MEDIAN,
                                   Keys.ADAPTIVE_LR_P90)):
            step.data.layers[key] = LayerValues(names, q[:, col])
