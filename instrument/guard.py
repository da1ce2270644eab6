"""Fail-open: an instrument that raises is switched off with one warning and one stored event.

Under ``strict=True`` (what the tests use) the error is re-raised instead, so bugs surface.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

from instrument.store import schema
from instrument.store.records import Event

log = logging.getLogger("avionics")


class InstrumentWarning(RuntimeWarning):
    """An avionics instrument failed and was disabled; training was not affected."""


class Guard:
    """Runs instrument code and applies the failure policy.

    Args:
        strict: re-raise instead of disabling.
        report: receives the :class:`Event` describing a disabled instrument.
    """

    def __init__(self, strict: bool, report: Callable[[Event], None]):
        self.strict = strict
        self.report = report

    def call(self, inst, method: str, *args, step: int | None = None):
        """Call ``inst.<method>(*args)`` unless the instrument is disabled."""
        if inst.disabled:
            return None
        try:
            return getattr(inst, method)(*args)
        except Exception as exc:
            self.fail(inst, method, exc, step)
            return None

    def fail(self, inst, method: str, exc: Exception, step: int | None) -> None:
        """Disable ``inst`` after ``exc`` (or re-raise under strict)."""
        if self.strict:
            raise exc
        if inst.disabled:
            return
        inst.disabled = True
        msg = (f"avionics instrument '{inst.name}' failed in {method}() at step {step} and is "
               f"now disabled; training continues. {type(exc).__name__}: {exc}")
        warnings.warn(msg, InstrumentWarning, stacklevel=3)
        log.debug("instrument failure", exc_info=exc)
        self.report(Event(schema.INSTRUMENT_ERROR, schema.WARNING, msg, step=step,
                          layer=inst.name, evidence={"method": method,
                                                     "error": f"{type(exc).__name__}: {exc}"}))
