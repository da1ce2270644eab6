"""A rule's finding: what it saw, where, and what to try; becomes a stored ``Event``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from instrument.store.records import Event

GROUP_KEY = "layers"
"""Evidence key of a grouped finding: all its layers, worst first."""

GROUP_NAMED = 8
"""Layers named in a grouped finding's message besides the worst (the evidence has all)."""


@dataclass
class Finding:
    """One diagnosis. Rules fill ``layer``, ``message`` and ``evidence``; the engine fills the
    rest from the rule (code, default severity, suggestion) and the current step.

    ``stored`` is True for findings that an instrument already wrote to the store at source
    (``nonfinite``); the engine reports them but does not write them twice.

    ``kind`` tells apart different problems one rule reports (a parameter without gradient vs.
    one that never changes): only findings of the same kind are grouped.

    ``score`` says how bad the finding is (higher is worse); it orders the layers of a grouped
    finding (see :meth:`group`), worst first.

    ``explained_by`` is ``(code, step)`` of a later finding that probably caused this one (see
    :meth:`instrument.diagnosis.engine.Engine.observe`); that finding's evidence lists it under
    ``explains``.
    """

    message: str
    layer: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    severity: str | None = None
    code: str = ""
    step: int | None = None
    suggestion: str | None = None
    stored: bool = False
    wall_time: float = field(default_factory=time.time)
    per_layer: bool = True
    explained_by: tuple | None = None
    score: float = 0.0
    kind: str = ""

    @property
    def layers(self) -> list:
        """The layers this finding holds for: those of a group, else its one layer (or none)."""
        grouped = (self.evidence or {}).get(GROUP_KEY)
        if grouped:
            return list(grouped)
        return [self.layer] if self.layer else []

    @classmethod
    def group(cls, findings: list) -> Finding:
        """One finding for the same problem in several layers, worst (highest score) first.

        The result looks like the worst layer's finding (its ``layer``, message, evidence and
        suggestion), so readers of single findings keep working; its evidence adds
        ``layers`` (all of them, worst first) and ``per_layer`` (each one's evidence), and the
        message names the other layers.
        """
        ranked = sorted(findings, key=lambda f: -f.score)  # stable: rule order on ties
        worst = ranked[0]
        names = [f.layer for f in ranked]
        shown = ", ".join(f"'{n}'" for n in names[1:1 + GROUP_NAMED])
        more = len(names) - 1 - GROUP_NAMED
        shown += f" and {more} more" if more > 0 else ""
        ev = {**dict(worst.evidence or {}), GROUP_KEY: names,
              "per_layer": {f.layer: dict(f.evidence or {}) for f in ranked}}
        return cls(f"In {len(names)} layers; worst: {worst.message} Also: {shown}.",
                   worst.layer, ev, worst.severity, worst.code, worst.step, worst.suggestion,
                   wall_time=worst.wall_time, per_layer=worst.per_layer, score=worst.score,
                   kind=worst.kind)

    @property
    def key(self) -> tuple:
        """What de-duplication compares: one finding per code and layer (or per code)."""
        return (self.code, self.layer if self.per_layer else None)

    def to_event(self) -> Event:
        """The store row for this finding."""
        return Event(self.code, self.severity, self.message, step=self.step, layer=self.layer,
                     evidence=dict(self.evidence) or None, suggestion=self.suggestion,
                     wall_time=self.wall_time)

    @classmethod
    def from_event(cls, e) -> Finding:
        """A finding for an event an instrument stored (reported, never stored again)."""
        return cls(e.message, e.layer, dict(e.evidence or {}), e.severity, e.code, e.step,
                   e.suggestion, stored=True, wall_time=e.wall_time)
