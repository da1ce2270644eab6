"""The Rule record: a code, a severity, documentation, and a pure check over the history.

A rule file defines one ``RULE = Rule(...)`` and its ``check`` function::

    def check(h: History, th: Thresholds, facts: RunFacts, state: dict) -> list[Finding]

``check`` runs after every recorded step. It reads only the rolling windows in ``h``, the
thresholds and the run's static facts, so it computes the same thing live (on the writer thread)
and on a saved run (``avionics diagnose``). ``state`` is a small dict the rule may keep between
steps (e.g. a running minimum); it must stay bounded. Findings are de-duplicated by the engine
(one per code and layer), so a rule may return the same finding on every step the condition
holds.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from instrument.store import schema


@dataclass(frozen=True)
class Rule:
    """A diagnosis rule (see the module docstring).

    Attributes:
        code: stable code, stored with every finding (a public contract).
        severity: default severity of its findings (``info``, ``warning`` or ``critical``).
        summary: one line, "fires when ...".
        suggestion: what to try, stored with every finding.
        check: the pure check function.
        needs: instruments that must record for the rule to say anything.
        keys: series the rule reads (the engine keeps windows of these only).
        needs_classifier: also needs a classification criterion (``watch(loss_fn=...)`` with
            CrossEntropyLoss or NLLLoss).
        after_nonfinite: keep checking at steps where the loss or weights are non-finite
            (other rules pause there: every statistic is garbage after a NaN).
        suppressed_by: codes that, once found, explain this rule's symptom better; the rule
            then stays quiet (e.g. no "learning rate too high" for the divergence that a
            missing ``zero_grad()`` causes).
        per_layer: findings are de-duplicated per code and layer (True) or per code only
            (False: run-wide findings whose ``layer`` just points at the worst layer).
        finish: optional ``finish(h, th, facts, state) -> list[Finding]``, run once when a
            finished run closes (live at ``close()``, and by ``avionics diagnose``): checks
            that only the end of the run can decide (a warm-up still rising at the end).
        windows: ``thresholds -> {key: records}``, how many records of each series ``check``
            reads (the engine keeps no more of layer series; unlisted ones keep
            ``Thresholds.history``).
    """

    code: str
    severity: str
    summary: str
    suggestion: str
    check: Callable
    needs: tuple = ()
    keys: tuple = ()
    needs_classifier: bool = False
    after_nonfinite: bool = False
    suppressed_by: tuple = ()
    per_layer: bool = True
    windows: Callable | None = None
    finish: Callable | None = None

    def __post_init__(self):
        if self.severity not in schema.SEVERITIES:
            raise ValueError(f"rule {self.code}: severity must be one of {schema.SEVERITIES}")

    def __reduce_ex__(self, protocol):
        # A rule defined as its module's RULE pickles as a reference to that module, so the
        # diagnosis engine can cross into the store worker process (``windows`` is usually a
        # lambda, which pickle cannot carry by value).
        module = getattr(self.check, "__module__", None)
        if module and module != "__main__" and getattr(sys.modules.get(module), "RULE",
                                                       None) is self:
            return _rule_of_module, (module,)
        return super().__reduce_ex__(protocol)

    def silent_reason(self, facts) -> str | None:
        """Why this rule cannot fire on a run with these facts, or None if it can."""
        missing = [n for n in self.needs if not facts.has(n)]
        if "criterion" in missing or "logits" in missing:
            return ("needs the criterion: pass watch(..., loss_fn=criterion) with the loss "
                    "module the loop calls")
        if missing:
            return f"needs the instrument(s) {', '.join(missing)}, which did not record"
        if self.needs_classifier and not facts.classifier:
            if not facts.criterion:
                return ("needs a classification criterion (CrossEntropyLoss or NLLLoss); the "
                        "run's metadata does not say which criterion it used")
            return (f"needs a classification criterion (CrossEntropyLoss or NLLLoss); the "
                    f"criterion is {facts.criterion.get('class')}")
        return None


def _rule_of_module(module: str) -> Rule:
    """The ``RULE`` of a rule module (unpickling a :class:`Rule`)."""
    return importlib.import_module(module).RULE
