"""User scalars passed to ``monitor.log(...)``: the loss, accuracy, anything scalar.

Tensors are accumulated on their device (no ``.item()``), Python numbers on the host. A key
logged several times in one step (e.g. the loss of each micro-batch under gradient
accumulation) is recorded as the mean of its values in that step.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.store.schema import Keys

SLOTS_PER_SECTION = 32


class UserScalars(Instrument):
    name = "scalars"
    default_schedule = 1

    def setup(self, buffer):
        self.buffer = buffer
        self.slots: dict = {}  # key -> (section, index)
        self.sections: list = []
        self._valid: set = set()  # keys already checked
        self.begin_step(0)

    def begin_step(self, step):
        self._dev_counts: dict = {}
        self._host: dict = {}  # key -> [sum, count]

    def has_data(self) -> bool:
        return bool(self._dev_counts or self._host)

    def log(self, key: str, value) -> None:
        """Record ``value`` under ``key`` for the current step (see the module docstring)."""
        if key not in self._valid:
            if not isinstance(key, str) or not key:
                raise TypeError(f"log() keys must be non-empty strings, got {key!r}")
            if Keys.is_builtin_scalar(key):
                raise ValueError(f"log(): {key!r} is a name avionics records itself; "
                                 "pick another")
            self._valid.add(key)
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_complex():
                raise ValueError(f"log({key}=...) takes a real scalar; got a tensor of shape "
                                 f"{tuple(value.shape)}. Reduce it first (e.g. .mean()).")
            sec, i = self._slot(key)
            target = sec.view[i]
            value = value.detach().reshape(())
            if value.device != target.device:
                value = value.to(target.device, non_blocking=True)
            target.add_(value)
            self._dev_counts[key] = self._dev_counts.get(key, 0) + 1
        elif isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, bool):
            acc = self._host.setdefault(key, [0.0, 0])
            acc[0] += float(value)
            acc[1] += 1
        else:
            raise TypeError(f"log({key}=...) takes a number or a one-element tensor, got "
                            f"{type(value).__name__}")

    def _slot(self, key):
        slot = self.slots.get(key)
        if slot is None:
            n = len(self.slots)
            if n // SLOTS_PER_SECTION >= len(self.sections):
                self.sections.append(self.buffer.add(f"user_scalars/{len(self.sections)}",
                                                     SLOTS_PER_SECTION, fill=0.0, reduce="sum"))
            slot = self.slots[key] = (self.sections[n // SLOTS_PER_SECTION],
                                      n % SLOTS_PER_SECTION)
        return slot

    def snapshot(self):
        dev = {k: (self.slots[k][0].name, self.slots[k][1], c) for k, c in self._dev_counts.items()}
        return dev, {k: tuple(v) for k, v in self._host.items()}

    def decode(self, step: HostStep, info):
        dev, host = info
        totals = {k: [0.0, 0] for k in {*dev, *host}}
        for key, (section, i, count) in dev.items():
            totals[key][0] += float(step.section(section)[i])
            totals[key][1] += count
        for key, (s, c) in host.items():
            totals[key][0] += s
            totals[key][1] += c
        for key, (s, c) in totals.items():
            step.data.scalars[key] = s / c
