"""Coverage notes: what instruments could not measure on a run, summarized per cause.

Instruments that cannot measure something store an info event at source, one per layer and
cause (``cockpit_unsupported``: per-sample statistics of a layer whose samples a batch-norm
layer mixes, curvature of a model with several outputs per sample, ...). Spread over dozens of
rows they are easy to miss; ``avionics diagnose`` and its JSON list them as one line per cause:
"per-sample quantities cover 2 of 62 parameters: BatchNorm in train mode ...". Torch-free.
"""

from __future__ import annotations

from instrument.store import schema

COVERAGE_CODES = (schema.COCKPIT_UNSUPPORTED,)
"""Event codes that say an instrument could not measure something."""

NAMED = 6
"""Modules named per note (the count says how many in all)."""

MODEL = "(model)"
"""Layer name of notes about the whole model."""


def notes(events, facts) -> list:
    """One note per (what, reason) of the coverage ``events`` (dicts or Event-likes with
    ``layer``, ``message`` and ``evidence``): ``{"what", "reason", "layers", "parameters",
    "of", "message"}``. ``parameters``/``of`` count the trainable parameters affected and in
    all (None where the facts do not say which module owns which parameter)."""
    groups: dict = {}
    for e in events:
        ev = _get(e, "evidence") or {}
        what = ev.get("affects") or "measurements"
        reason = ev.get("reason") or _get(e, "message")
        layer = _get(e, "layer")
        entry = groups.setdefault((what, reason), [])
        if layer not in entry:
            entry.append(layer)
    trainable = [p for p in facts.params if p.get("trainable")]
    out = []
    for (what, reason), layers in groups.items():
        whole = any(n in (None, MODEL) for n in layers)
        mods = [n for n in layers if n not in (None, MODEL)]
        affected = [p for p in trainable if p.get("module") in set(mods)]
        count = len(trainable) if whole else (len(affected) if trainable else None)
        cap = what[0].upper() + what[1:]
        if whole:
            msg = f"{cap}: not recorded for the model: {reason}."
        elif count is not None:
            named = ", ".join(mods[:NAMED]) + (f" and {len(mods) - NAMED} more"
                                               if len(mods) > NAMED else "")
            msg = (f"{cap} cover {len(trainable) - count} of {len(trainable)} parameters: "
                   f"{reason} ({count} parameters in {len(mods)} modules: {named}).")
        else:
            msg = f"{cap}: not recorded for {len(mods)} modules ({', '.join(mods[:NAMED])}): " \
                  f"{reason}."
        out.append({"what": what, "reason": reason, "layers": layers, "parameters": count,
                    "of": len(trainable) or None, "message": msg})
    return out


def _get(e, name):
    return e.get(name) if isinstance(e, dict) else getattr(e, name, None)
