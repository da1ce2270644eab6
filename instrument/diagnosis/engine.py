"""The diagnosis engine: feeds each recorded step to the rules and de-duplicates their findings.

Live, ``watch()`` passes the engine to the store writer as an observer, so the rules run on the
writer thread on each step's data (in step order) and their findings are stored as events and
logged once to the console. On a saved run, :mod:`instrument.diagnosis.replay` feeds the same
engine the recorded steps.

The same problem (a rule's findings of one ``kind``) found in many (``GROUP_MIN_LAYERS``)
layers at one step (a rule returning several findings) is
one finding listing the layers, worst first (:meth:`Finding.group`): the worst layer is its
``layer``, its evidence has ``layers`` and ``per_layer``.

A rule's ``suppressed_by`` codes explain its symptom better: once one is found, the rule stays
quiet. Root-cause rules need a few records before they speak, though (``input_scale`` looks at
five), so a consequence can be found first: a high first loss at step 0, before the inputs were
judged. When a cause is found, the findings of the rules it would have silenced in the last
``explain_steps`` steps are linked to it: the cause's evidence lists them under ``explains``, its
message says to fix it first, and each of them gets ``explained_by``. Nothing is dropped.

Events that an instrument stored at source (``nonfinite``, with the origin only the device-side
hooks can see) reach the engine through ``StepData.events``: they are reported and logged like
findings but not stored twice.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

import numpy as np

from instrument.diagnosis.facts import RunFacts
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.history import History
from instrument.diagnosis.thresholds import Thresholds
from instrument.store import schema
from instrument.store.records import Event, StepData
from instrument.store.schema import DKeys, Keys

log = logging.getLogger("avionics.diagnosis")

SOURCE_CODES = (schema.NONFINITE,)
"""Event codes that instruments store at source; the engine reports them, never re-stores them."""

FACT_CODES = (schema.OPTIMIZER_CHANGED,)
"""Event codes that change the run's facts (parameters frozen or unfrozen during the run)."""

CONSOLE_LAYERS_PER_CODE = 3
"""Console lines per code (one per layer); further layers are summarized in one line."""

GROUP_MIN_LAYERS = 3
"""A rule's findings for this many layers or more at one step become one grouped finding."""

_LEVELS = {schema.INFO: logging.INFO, schema.WARNING: logging.WARNING,
           schema.CRITICAL: logging.ERROR}

_BASE_KEYS = (Keys.LOSS, DKeys.CRIT_LOSS, Keys.WEIGHT_NORM)


class Engine:
    """Runs the rules over a stream of steps.

    Args:
        facts: the run's static facts.
        thresholds: the thresholds (defaults if None).
        rules: the rules to run (default: all of :data:`instrument.diagnosis.rules.RULES`).
        console: log new findings through ``logging`` (live); False for replays.
        strict: re-raise a failing rule's error (tests) instead of disabling the rule.
    """

    def __init__(self, facts: RunFacts, thresholds: Thresholds | None = None,
                 rules: Iterable | None = None, *, console: bool = True,
                 strict: bool = False):
        from instrument.diagnosis.rules import RULES

        self.facts = facts
        self.th = thresholds or Thresholds()
        self.rules = [r for r in (RULES if rules is None else rules)
                      if r.code not in self.th.disabled_rules]
        self.status = {r.code: "disabled by thresholds['disabled_rules']"
                       for r in (RULES if rules is None else rules)
                       if r.code in self.th.disabled_rules}
        self.active = []
        for r in self.rules:
            reason = r.silent_reason(facts)
            self.status[r.code] = reason or "active"
            if reason is None:
                self.active.append(r)
        keys = set(_BASE_KEYS)
        sizes = {key: 1 for key in _BASE_KEYS}
        for r in self.active:
            keys.update(r.keys)
            for key, n in (r.windows(self.th) if r.windows else {}).items():
                sizes[key] = max(sizes.get(key, 1), int(n))
        self.history = History(self.th.history, keys, sizes)
        self._explains = {}  # cause code -> codes of the rules it silences
        for r in self.rules:
            for cause in r.suppressed_by:
                self._explains.setdefault(cause, set()).add(r.code)
        self.console = console
        self.strict = strict
        self.findings: list = []
        self._states = {r.code: {} for r in self.active}
        self._seen: set = set()
        self._codes: set = set()
        self._logged: Counter = Counter()
        self._errors: list = []

    # ---- observer interface -------------------------------------------------------------------
    def __call__(self, d: StepData) -> list:
        """Observer for :class:`~instrument.store.writer.StoreWriter`: the events to store."""
        return [f.to_event() for f in self.observe(d) if not f.stored] + self._take_errors()

    def observe(self, d: StepData) -> list:
        """Feed one step; returns the new findings (including source events, marked stored)."""
        h = self.history
        h.push(d)
        new = []
        for e in h.events:
            if e.code in SOURCE_CODES:
                f = Finding.from_event(e)
                self.findings.append(f)
                new.append(f)
                self._log(f)
            elif e.code in FACT_CODES and "frozen" in (e.evidence or {}):
                self.facts.set_frozen(e.evidence["frozen"])
        poisoned = self._nonfinite_now()
        for rule in list(self.active):
            if poisoned and not rule.after_nonfinite:
                continue
            if any(code in self._codes for code in rule.suppressed_by):
                continue
            try:
                found = rule.check(h, self.th, self.facts, self._states[rule.code]) or ()
            except Exception as exc:
                if self.strict:
                    raise
                self._disable(rule, exc)
                continue
            new += self._accept(rule, found)
        return new

    def finish(self) -> list:
        """The end-of-run checks (rules with a ``finish`` function, e.g. a warm-up still rising
        when the run ended); called once when a finished run closes, live and in replays.
        Returns the new findings."""
        new = []
        for rule in list(self.active):
            if rule.finish is None or any(c in self._codes for c in rule.suppressed_by):
                continue
            try:
                found = rule.finish(self.history, self.th, self.facts,
                                    self._states[rule.code]) or ()
            except Exception as exc:
                if self.strict:
                    raise
                self._disable(rule, exc)
                continue
            new += self._accept(rule, found)
        return new

    def close_events(self) -> list:
        """Observer hook for the store worker when the run closes as finished: the events of
        :meth:`finish` to store."""
        return [f.to_event() for f in self.finish() if not f.stored] + self._take_errors()

    def describe(self) -> dict:
        """What goes into ``meta["diagnosis"]``: facts, overridden thresholds, rule status."""
        return {"facts": self.facts.to_dict(), "thresholds": self.th.overrides(),
                "rules": dict(self.status)}

    # ---- internals -----------------------------------------------------------------------------
    def _accept(self, rule, found) -> list:
        """Fill in, de-duplicate, group (one finding for several layers), link and log what
        ``rule`` found; returns the new findings."""
        h = self.history
        fresh = []
        for f in found:
            f.code = rule.code
            f.severity = f.severity or rule.severity
            f.step = h.step if f.step is None else f.step
            f.suggestion = f.suggestion or rule.suggestion
            f.per_layer = rule.per_layer
            if f.key in self._seen or any(g.key == f.key for g in fresh):
                continue
            fresh.append(f)
        if not fresh:
            return []
        for f in fresh:
            self._seen.add(f.key)
        kinds: dict = {}
        for f in fresh:
            kinds.setdefault(f.kind, []).append(f)
        fresh = [g for same in kinds.values() for g in (
            [Finding.group(same)] if len(same) >= GROUP_MIN_LAYERS else same)]
        for f in fresh:
            self._codes.add(f.code)
            h.found.add(f.code)
            self._link_consequences(f)
            self.findings.append(f)
            self._log(f)
        return fresh

    def _link_consequences(self, cause: Finding) -> None:
        """Link recent findings that ``cause`` explains (see the module docstring)."""
        codes = self._explains.get(cause.code)
        if not codes:
            return
        earlier = [g for g in self.findings if g.code in codes and g.explained_by is None
                   and g.step is not None and g.step >= cause.step - self.th.explain_steps]
        if not earlier:
            return
        for g in earlier:
            g.explained_by = (cause.code, cause.step)
        names = sorted({g.code for g in earlier})
        cause.evidence = {**dict(cause.evidence or {}), "explains": [
            f"{g.code}@{g.step}" + (f":{g.layer}" if g.layer else "") for g in earlier]}
        cause.message += (f" It probably causes the earlier finding(s) {', '.join(names)}: fix "
                          "it first.")

    def _nonfinite_now(self) -> bool:
        """True if this step's loss or weights are non-finite (rules pause: stats are garbage)."""
        h = self.history
        if any(e.code == schema.NONFINITE for e in h.events):
            return True
        for key in (Keys.LOSS, DKeys.CRIT_LOSS):
            v = h.now(key)
            if v is not None and not np.isfinite(v):
                return True
        w = h.now(Keys.WEIGHT_NORM)  # recorded for every parameter: NaN there is a NaN weight
        return w is not None and not np.all(np.isfinite(w))

    def _log(self, f: Finding) -> None:
        if not self.console:
            return
        self._logged[f.code] += 1
        n = self._logged[f.code]
        level = _LEVELS.get(f.severity, logging.WARNING)
        if n <= CONSOLE_LAYERS_PER_CODE:
            tail = f" Try: {f.suggestion}" if f.suggestion else ""
            log.log(level, "avionics %s [%s] %s%s", f.severity, f.code, f.message, tail)
        elif n == CONSOLE_LAYERS_PER_CODE + 1:
            log.log(level, "avionics %s [%s] also in further layers; see the run's events or "
                    "`avionics diagnose`", f.severity, f.code)

    def _disable(self, rule, exc: Exception) -> None:
        self.active.remove(rule)
        self.status[rule.code] = f"disabled after an error: {type(exc).__name__}: {exc}"
        msg = (f"diagnosis rule {rule.code} failed at step {self.history.step} and was "
               f"disabled; training and the other rules continue. {type(exc).__name__}: {exc}")
        log.warning("avionics: %s", msg)
        self._errors.append(Event(schema.INSTRUMENT_ERROR, schema.WARNING, msg,
                                  step=self.history.step, layer=f"rule:{rule.code}"))

    def _take_errors(self) -> list:
        out, self._errors = self._errors, []
        return out
