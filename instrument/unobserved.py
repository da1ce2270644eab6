"""Leaf modules whose outputs the forward hooks cannot observe, and the info event naming them.

Two causes: a ``torch.compile``'d graph fuses the modules' forwards (:mod:`instrument.compiled`),
and a ``use_reentrant=True`` checkpoint runs their only grad-enabled forward inside backward
(:mod:`instrument.checkpointing`). Either way the monitor notes the modules as they are seen
and stores one event per newly seen batch of them.
"""

from __future__ import annotations

SHOWN = 10
"""Module names written out in the event's message (the evidence lists all)."""


class NotedModules:
    """Leaf-module indices noted as unobserved, each reported once."""

    def __init__(self):
        self.indices: set = set()
        self.reported: set = set()

    def unreported(self) -> list:
        """Indices noted since the last call, sorted; marks them reported."""
        new = sorted(self.indices - self.reported)
        self.reported.update(new)
        return new


def event(code: str, names: list, where: str, why: str, instruments: list, step: int,
          suggestion: str | None = None):
    """``{n} module(s) {where} ({names}){why} {instruments} record nothing for them ...``."""
    from instrument.store import schema
    from instrument.store.records import Event

    shown = ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more"
                                        if len(names) > SHOWN else "")
    return Event(
        code, schema.INFO,
        f"{len(names)} module(s) {where} ({shown}){why} "
        f"{', '.join(instruments) or 'no instrument'} record nothing for them (activation "
        "statistics, forward order, the forward part of the NaN/Inf origin). Gradient, weight, "
        "update and optimizer statistics are unaffected.",
        step=step, evidence={"modules": names, "instruments": instruments},
        suggestion=suggestion)
