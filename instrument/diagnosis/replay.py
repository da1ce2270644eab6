"""Re-running the rules on a saved run: read the recorded steps back and feed the same engine.

The store keeps every recorded value per step (layer series in float32, which is also the
precision the live engine uses), and the run's metadata keeps the facts and the thresholds the
rules ran with, so the findings match the live ones. Steps are read in chunks, so memory stays
bounded for long runs. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from instrument.diagnosis import coverage
from instrument.diagnosis.engine import FACT_CODES, SOURCE_CODES, Engine
from instrument.diagnosis.facts import RunFacts
from instrument.diagnosis.rules import CODES
from instrument.diagnosis.thresholds import Thresholds
from instrument.store import schema
from instrument.store.reader import Run
from instrument.store.records import Event, LayerValues, StepData

CHUNK_STEPS = 2000
"""Steps read from the store at a time."""


@dataclass
class Diagnosis:
    """The result of :func:`diagnose`: findings in the order found, and each rule's status."""

    run: str
    meta: dict
    findings: list
    status: dict
    thresholds: Thresholds
    notes: list = field(default_factory=list)  # instrument errors recorded in the run
    coverage: list = field(default_factory=list)  # what instruments could not measure

    @property
    def critical(self) -> list:
        return [f for f in self.findings if f.severity == schema.CRITICAL]


def diagnose(run: Run, thresholds: Mapping[str, Any] | None = None) -> Diagnosis:
    """Run the rules over a saved run.

    Args:
        run: the run, from :func:`instrument.store.reader.load`.
        thresholds: overrides on top of those the run was recorded with.

    Raises:
        ValueError, TypeError: bad threshold overrides (see :class:`Thresholds`).
        instrument.store.errors.StoreError: the store cannot be read.
    """
    meta = run.meta
    facts = RunFacts.from_meta(meta)
    recorded = dict((meta.get("diagnosis") or {}).get("thresholds") or {})
    th = Thresholds.from_overrides({**recorded, **dict(thresholds or {})}, known_codes=CODES)
    engine = Engine(facts, th, console=False)
    source = _source_events(run, facts)
    for d in iter_steps(run, engine.history._wanted):
        d.events = source.get(d.step, [])
        engine.observe(d)
    if meta.get("status") == schema.FINISHED:
        engine.finish()  # the end-of-run checks the live engine ran at close()
    notes = _events(run, (schema.INSTRUMENT_ERROR,))
    cover = coverage.notes(_events(run, coverage.COVERAGE_CODES), facts)
    return Diagnosis(run.run_dir, meta, engine.findings, dict(engine.status), th, notes, cover)


def iter_steps(run: Run, wanted=lambda key: True) -> Iterator[StepData]:
    """The recorded steps in order, each with the series recorded at it (``wanted`` keys)."""
    series = [(key, kind) for kind in (schema.SCALAR, schema.LAYER) for key in run.keys(kind)
              if wanted(key)]
    names = {key: run.layer_names(key) for key, kind in series if kind == schema.LAYER}
    first, last = run.step_range()
    if first is None:
        return
    lo = first
    while lo <= last:
        hi = lo + CHUNK_STEPS - 1
        steps: dict = {}
        for key, kind in series:
            got, values = run.points_after(key, kind, after_step=lo - 1, limit=CHUNK_STEPS)
            keep = got <= hi
            for step, value in zip(got[keep], values[keep]):
                d = steps.get(int(step))
                if d is None:
                    d = steps[int(step)] = StepData(int(step), 0.0)
                if kind == schema.SCALAR:
                    d.scalars[key] = float(value)
                else:
                    d.layers[key] = LayerValues(names[key], np.asarray(value))
        for step in sorted(steps):
            yield steps[step]
        lo = hi + 1


def _events(run: Run, codes) -> list:
    df = run.events(codes=codes)
    return [Event(r.code, r.severity, r.message, step=None if pd.isna(r.step) else int(r.step),
                  layer=r.layer, evidence=r.evidence, suggestion=r.suggestion,
                  wall_time=r.wall_time)
            for r in df.itertuples()]


def _source_events(run: Run, facts: RunFacts) -> dict:
    """Events stored at source, by step, that the engine reads: the instruments' (only when
    the ``nonfinite`` instrument ran; otherwise the rule's own stored findings are recomputed)
    and those that change the run's facts."""
    codes = (SOURCE_CODES if facts.has("nonfinite") else ()) + FACT_CODES
    out: dict = {}
    for e in _events(run, codes):
        out.setdefault(e.step, []).append(e)
    return out
