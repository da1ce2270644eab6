"""A rule's finding: what it saw, where, and what to try; becomes a stored ``Event``."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from instrument.store.records import Event


@dataclass
class Finding:
    """One diagnosis. Rules fill ``layer``, ``message`` and ``evidence``; the engine fills the
    rest from the rule (code, default severity, suggestion) and the current step.

    ``stored`` is True for findings that an instrument already wrote to the store at source
    (``nonfinite``); the engine reports them but does not write them twice.

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
