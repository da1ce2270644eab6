"""What the criterion's input looks like: logits, probabilities or log-probabilities.

For ``CrossEntropyLoss`` and ``NLLLoss`` (class dimension 1, or 0 for one unbatched sample) and
``BCEWithLogitsLoss`` given as ``watch(loss_fn=...)``, or, without one, for the captured
``F.cross_entropy`` or ``F.nll_loss`` calls (those of the step's first classifier kind, the
calls the criterion instrument records too, which says which kind in :attr:`DKeys.CRIT_NLL`),
each grad-enabled call records, on the device:

* the smallest and largest input value;
* the largest deviation from 1 of a row's sum over classes (0 for probabilities: a softmax was
  applied before a loss that applies its own);
* the largest deviation from 0 of a row's logsumexp (0 for log-probabilities).

Captured ``F.binary_cross_entropy_with_logits`` calls (also an ``nn.BCEWithLogitsLoss`` called
inside ``forward``) record the range of their input apart (:attr:`DKeys.BCE_INPUT_MIN`/``MAX``):
an input always within [0, 1] is a sigmoid output given to a loss that applies its own.

Scheduled at each of the first 20 steps (a wrong loss input is a day-one bug) and every 10th
step after: the row reductions read the whole logits tensor, which for large vocabularies costs
about as much as the loss itself.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from instrument.instruments.base import HostStep, Instrument
from instrument.losses import BCE_LOGITS, LossCall
from instrument.schedules import dense_then_every
from instrument.store.schema import DKeys

SUM_DEV, LSE_DEV, XMAX = range(3)


class Logits(Instrument):
    name = "logits"
    default_schedule = dense_then_every(20, 10)

    @classmethod
    def applies(cls, ctx):
        return ctx.loss_fn is None or isinstance(
            ctx.loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss, nn.BCEWithLogitsLoss))

    def setup(self, buffer):
        self.max = buffer.add("logits_max", 3, fill=-math.inf, reduce="max")
        self.min = buffer.add("logits_min", 1, fill=math.inf, reduce="min")
        self.rows = not isinstance(self.ctx.loss_fn, nn.BCEWithLogitsLoss)
        self.captured = self.ctx.loss_fn is None
        if self.captured:  # [max, -min] of the captured BCE-with-logits inputs
            self.bce = buffer.add("logits_bce", 2, fill=-math.inf, reduce="max")

    def begin_step(self, step):
        self._seen = False
        self._bce_seen = False
        self._kind = None  # captured runs: the classifier kind whose calls are recorded

    def loss_inputs(self, call: LossCall):
        if self.captured:
            if call.kind == BCE_LOGITS:
                return self._bce_range(call.input)
            kind = call.step_kind(self._kind)
            if kind is None:
                return
            self._kind = kind
        x = call.input
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            return
        x = x.detach().float()
        lo, hi = torch.aminmax(x)
        vals = [torch.full((), -math.inf, device=x.device)] * 2 + [hi]
        if self.rows and x.dim() >= 1:
            dim = 1 if x.dim() >= 2 else 0
            vals[SUM_DEV] = (x.sum(dim) - 1).abs().amax()
            vals[LSE_DEV] = torch.logsumexp(x, dim).abs().amax()
        view = self.max.view
        torch.maximum(view, torch.stack(vals).to(view), out=view)
        torch.minimum(self.min.view, lo.to(self.min.view), out=self.min.view)
        self._seen = True

    def _bce_range(self, x):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.numel() == 0:
            return
        lo, hi = torch.aminmax(x.detach().float())
        view = self.bce.view
        torch.maximum(view, torch.stack([hi, -lo]).to(view), out=view)
        self._bce_seen = True

    def snapshot(self):
        return self._seen, self._bce_seen

    def decode(self, step: HostStep, info):
        seen, bce_seen = info
        if bce_seen:
            hi, neg_lo = step.section("logits_bce")
            step.data.scalars[DKeys.BCE_INPUT_MIN] = float(-neg_lo)
            step.data.scalars[DKeys.BCE_INPUT_MAX] = float(hi)
        if not seen:
            return
        mx = step.section("logits_max")
        out = step.data.scalars
        out[DKeys.LOGIT_MIN] = float(step.section("logits_min")[0])
        out[DKeys.LOGIT_MAX] = float(mx[XMAX])
        if self.rows:
            out[DKeys.LOGIT_SUM_DEV] = float(mx[SUM_DEV])
            out[DKeys.LOGIT_LSE_DEV] = float(mx[LSE_DEV])
