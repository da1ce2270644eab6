"""User scalars passed to ``monitor.log(...)``: the loss, accuracy, anything scalar.

Tensors are accumulated on their device (no ``.item()``), Python numbers on the host. A key
logged several times in one step (e.g. the loss of each micro-batch under gradient
accumulation) is recorded as the mean of its values in that step.
"""

from __future__ import annotations

import hashlib
import numbers
import warnings

import numpy as np
import torch

from instrument.instruments.base import HostStep, Instrument
from instrument.store import schema

SLOTS_PER_SECTION = 32

KEYED_SLOTS = 64
"""Keys reserved up front in keyed mode (torch.distributed), so that every rank's buffer has
the same layout from the first step; further keys are dropped with one warning."""

# columns of a keyed section's rows
SUM, COUNT, KEY = range(3)


def key_hash(key: str) -> float:
    """A 52-bit hash of ``key``, exact in float64 and never 0 (0 marks an empty row)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return float((int.from_bytes(digest, "little") & ((1 << 52) - 1)) or 1)


class UserScalars(Instrument):
    name = "scalars"
    default_schedule = 1

    keyed = False
    """Set by the distributed session before ``setup``: rows become ``[sum, count, key hash]``
    (reduce kind ``"keyed"``), host numbers go to the device too, and :data:`KEYED_SLOTS` rows
    are reserved, so that ranks combine each key by name whatever order they logged in."""

    def setup(self, buffer):
        self.buffer = buffer
        self.slots: dict = {}  # key -> (section, index)
        self.sections: list = []
        self._valid: set = set()  # keys already checked
        self.begin_step(0)
        self._keyed_info = {}
        self._dropped: set = set()
        if self.keyed:
            for _ in range(-(-KEYED_SLOTS // SLOTS_PER_SECTION)):
                self._add_section()

    def begin_step(self, step):
        self._dev_counts: dict = {}
        self._host: dict = {}  # key -> [sum, count]
        self.overflow = False  # keyed mode: a key was dropped at this step (capacity)

    def log(self, key: str, value) -> None:
        """Record ``value`` under ``key`` for the current step (see the module docstring)."""
        if key not in self._valid:
            if not isinstance(key, str) or not key:
                raise TypeError(f"log() keys must be non-empty strings, got {key!r}")
            if schema.is_reserved_scalar(key):
                owner = schema.specs_of(key)[0]
                raise ValueError(f"log(): {key!r} is a name avionics records itself "
                                 f"(declared as {owner.name!r} in instrument.store.schema); a "
                                 "value logged under it would be overwritten. Pick another "
                                 "name, e.g. 'my/" + key + "'")
            self._valid.add(key)
        if isinstance(value, torch.Tensor):
            if value.numel() != 1 or value.is_complex():
                raise ValueError(f"log({key}=...) takes a real scalar; got a tensor of shape "
                                 f"{tuple(value.shape)}. Reduce it first (e.g. .mean()).")
            sec, i = self._slot(key)
            if sec is None:
                return
            target = sec.view[i, SUM] if self.keyed else sec.view[i]
            value = value.detach().reshape(())
            if value.device != target.device:
                value = value.to(target.device, non_blocking=True)
            target.add_(value)
            self._dev_counts[key] = self._dev_counts.get(key, 0) + 1
        elif isinstance(value, (numbers.Real, np.generic)) and not isinstance(value, bool):
            if self.keyed and self._slot(key)[0] is None:
                return
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
            if self.keyed and n >= len(self.sections) * SLOTS_PER_SECTION:
                # growing the buffer on one rank only would break the shared layout
                self.overflow = True
                if key not in self._dropped:
                    self._dropped.add(key)
                    warnings.warn(f"avionics: log({key}=...) not recorded: a distributed run "
                                  f"records at most {KEYED_SLOTS} distinct scalar keys "
                                  "(instrument.instruments.scalars.KEYED_SLOTS)", stacklevel=4)
                return None, None
            if n // SLOTS_PER_SECTION >= len(self.sections):
                self._add_section()
            slot = self.slots[key] = (self.sections[n // SLOTS_PER_SECTION],
                                      n % SLOTS_PER_SECTION)
            self._keyed_info = None  # rebuilt at the next snapshot
        return slot

    def _add_section(self):
        name = f"user_scalars/{len(self.sections)}"
        if self.keyed:
            sec = self.buffer.add(name, (SLOTS_PER_SECTION, 3), fill=0.0, reduce="keyed")
        else:
            sec = self.buffer.add(name, SLOTS_PER_SECTION, fill=0.0, reduce="sum")
        self.sections.append(sec)

    def end_step(self):
        if not self.keyed or not self.slots:
            return
        # counts, host-side sums and key hashes of every known key, one small copy per section
        # (keys this rank did not log at this step keep count 0 but still name their row, so
        # the other ranks' values for them are combined)
        rows = {sec.name: np.zeros((SLOTS_PER_SECTION, 3)) for sec in self.sections}
        for key, (sec, i) in self.slots.items():
            row = rows[sec.name][i]
            row[COUNT] = self._dev_counts.get(key, 0)
            row[KEY] = key_hash(key)
        for key, (total, count) in self._host.items():
            sec, i = self.slots[key]
            rows[sec.name][i, SUM] += total
            rows[sec.name][i, COUNT] += count
        for sec in self.sections[: -(-len(self.slots) // SLOTS_PER_SECTION)]:
            host = torch.from_numpy(rows[sec.name]).to(sec.view.dtype)
            if sec.view.device.type == "cuda":
                host = host.pin_memory()  # an asynchronous copy: no wait for the device
            sec.view.add_(host.to(sec.view.device, non_blocking=True))

    def snapshot(self):
        if self.keyed:
            if self._keyed_info is None:
                self._keyed_info = {k: (sec.name, i) for k, (sec, i) in self.slots.items()}
            return self._keyed_info
        dev = {k: (self.slots[k][0].name, self.slots[k][1], c) for k, c in self._dev_counts.items()}
        return dev, {k: tuple(v) for k, v in self._host.items()}

    def decode(self, step: HostStep, info):
        if self.keyed:
            for key, (section, i) in info.items():
                total, count, _ = step.section(section)[i]
                if count > 0:
                    step.data.scalars[key] = float(total) / float(count)
            return
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
