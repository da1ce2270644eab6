"""Wiring the diagnosis into ``watch()``: collect the run's facts and build the engine."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from instrument.diagnosis.engine import Engine
from instrument.diagnosis.facts import RunFacts, collect
from instrument.diagnosis.thresholds import Thresholds

log = logging.getLogger("avionics")


def check_thresholds(thresholds: Mapping[str, Any] | None) -> Thresholds:
    """Validate ``watch(thresholds=...)`` in the caller's frame (clear errors, see Thresholds)."""
    from instrument.diagnosis.rules import CODES

    return Thresholds.from_overrides(thresholds, known_codes=CODES)


def attach_engine(ctx, instruments: list, schedules: dict, thresholds: Thresholds,
                  strict: bool) -> Engine:
    """The engine for a live run; pass it to the StoreWriter as an observer and store
    ``engine.describe()`` as ``meta["diagnosis"]``.

    Args:
        ctx: the monitor's Context.
        instruments: the instruments attached.
        schedules: instrument name -> Schedule (an instrument scheduled ``never()`` is inactive).
        thresholds: checked thresholds.
        strict: re-raise rule errors (tests).
    """
    active = [i.name for i in instruments
              if repr(schedules.get(i.name, "")) != "never()"]
    try:
        facts = collect(ctx, active)
    except Exception as exc:  # fail open: rules that need the facts stay quiet
        if strict:
            raise
        log.warning("avionics: could not describe the model for the diagnosis rules (%s: %s); "
                    "some rules stay quiet", type(exc).__name__, exc)
        facts = RunFacts(instruments=active)
    return Engine(facts, thresholds, console=True, strict=strict)
