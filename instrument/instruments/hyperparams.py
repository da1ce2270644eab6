"""Optimizer hyperparameters per param group, read every step: learning rate, momentum or
betas, weight decay. Host-side values (no device work); recorded as ``lr/<group>`` etc."""

from __future__ import annotations

import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.store.schema import Keys


def _host_float(x):
    """A Python float from a number or a CPU tensor; None for device tensors (no host sync)."""
    if isinstance(x, torch.Tensor):
        return float(x) if x.device.type == "cpu" and x.numel() == 1 else None
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    return None


class Hyperparams(Instrument):
    name = "hyperparams"
    default_schedule = 1

    @classmethod
    def applies(cls, ctx):
        return ctx.optimizer is not None

    def pre_step(self):
        self._values = []
        for group in self.ctx.optimizer.param_groups:
            row = {Keys.LR: group.get("lr"), Keys.WEIGHT_DECAY: group.get("weight_decay")}
            if "momentum" in group:
                row[Keys.MOMENTUM] = group["momentum"]
            if "betas" in group:
                row[Keys.BETA1], row[Keys.BETA2] = group["betas"]
            self._values.append({k: _host_float(v) for k, v in row.items()})

    def snapshot(self):
        return getattr(self, "_values", None)

    def decode(self, step: HostStep, info):
        for gi, row in enumerate(info or ()):
            for key, value in row.items():
                if value is not None:
                    step.data.scalars[Keys.per_group(key, gi)] = value
