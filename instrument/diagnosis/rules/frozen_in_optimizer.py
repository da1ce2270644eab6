"""frozen_in_optimizer: parameters handed to the optimizer although ``requires_grad=False``.

Freezing a backbone with ``requires_grad=False`` while passing ``model.parameters()`` to the
optimizer works (the optimizer skips parameters without a gradient), but it is often a sign
that the freezing and the optimizer disagree: a layer meant to be trained was frozen, or one
meant to be frozen will train as soon as ``requires_grad`` is switched back on (its optimizer
state, momentum and weight decay included). An info finding names them, once, from the
run's static facts (taken when ``watch()`` attaches).
"""

from __future__ import annotations

from instrument.diagnosis.finding import Finding
from instrument.diagnosis.rule import Rule
from instrument.store import schema

NAMED = 8
"""Parameters named in the message (the evidence lists all)."""


def check(h, th, facts, state):
    if state.get("done"):
        return []
    state["done"] = True
    names = [p["name"] for p in facts.params if p.get("in_optimizer") and not p["trainable"]]
    if not names:
        return []
    held = sum(1 for p in facts.params if p.get("in_optimizer"))
    shown = ", ".join(f"'{n}'" for n in names[:NAMED])
    if len(names) > NAMED:
        shown += f" and {len(names) - NAMED} more"
    return [Finding(
        f"At step {h.step}, {len(names)} of the {held} parameters held by the optimizer have "
        f"requires_grad=False and will not train: {shown}. Fine for a frozen backbone; check "
        f"that it is meant.",
        names[0], {"parameters": names, "count": len(names), "in_optimizer": held})]


RULE = Rule(
    code="frozen_in_optimizer", severity=schema.INFO,
    summary="parameters held by the optimizer have requires_grad=False",
    suggestion=("If they are frozen on purpose, pass only the trainable ones to the optimizer "
                "(filter(lambda p: p.requires_grad, model.parameters())); otherwise set "
                "requires_grad=True on them."),
    check=check, per_layer=False)
