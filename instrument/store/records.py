"""Plain records that travel from the training process to the writer thread (numpy, no torch)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from instrument.store.schema import SEVERITIES


@dataclass
class LayerValues:
    """One value per named layer for one step. ``values[i]`` belongs to ``layers[i]``."""

    layers: Sequence[str]
    values: np.ndarray

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64).reshape(-1)
        if len(self.layers) != self.values.shape[0]:
            raise ValueError(f"{len(self.layers)} layer names for {self.values.shape[0]} values")


@dataclass
class StepData:
    """Everything recorded at one step: scalars by key, and per-layer values by key."""

    step: int
    wall_time: float = field(default_factory=time.time)
    scalars: dict = field(default_factory=dict)  # key -> float
    layers: dict = field(default_factory=dict)  # key -> LayerValues
    # events that instruments produced at source for this step (e.g. nonfinite); set by the
    # writer before observers run, so that they can react to them (stored separately)
    events: list = field(default_factory=list)


@dataclass
class Event:
    """A row of the ``events`` table: a NaN/Inf event, an instrument error or a warning."""

    code: str
    severity: str
    message: str
    step: int | None = None
    layer: str | None = None
    evidence: Mapping[str, Any] | None = None
    suggestion: str | None = None
    rank: int | None = None
    wall_time: float = field(default_factory=time.time)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")
