"""Findings (the events table) ranked and grouped for the health strip: what is wrong, first.

Pure functions over the events frame of one or more runs (``run.events()`` with ``run`` and
``run_label`` columns, see :func:`dashboard.panels.events.frame`).

* **Grouped**: one row per (run, code). A rule that fires in 37 layers is one row, "dead_units:
  37 layers", whose layers expand underneath. An event's ``layer`` is its worst layer; when the
  diagnosis groups layers itself, its evidence lists all of them (see :data:`LAYER_LISTS`).
* **Ranked**: by severity (critical first), then cause before consequence, then step. A cause's
  evidence lists the findings it explains (``explains``: ``["dead_units@12:fc1", ...]``); a
  consequence names its cause (``explained_by``) or the codes that would silence it
  (``suppressed_by``). A code explained by another finding present in the run sorts after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from instrument.store import schema

SEVERITY_RANK = {schema.CRITICAL: 0, schema.WARNING: 1, schema.INFO: 2}
"""Sort order of severities: critical first."""

LAYER_LISTS = ("layers", "all_layers", "modules", "parameters")
"""Evidence keys that list every layer an event covers (its ``layer`` is the worst one)."""

CAUSE, PLAIN, CONSEQUENCE = 0, 1, 2
"""Ranks of a finding's role: explains others, stands alone, is explained by another."""

PANEL_OF = {
    schema.NONFINITE: "scalars", "loss_at_chance": "scalars", "initial_loss": "scalars",
    "lr_too_high": "update_ratio", "lr_too_low": "update_ratio",
    "lr_schedule_increasing": "learning_rate", "frozen_parameters": "update_ratio",
    "vanishing_gradients": "grad_norm", "exploding_gradients": "grad_norm",
    "clipping_saturated": "grad_norm", "missing_zero_grad": "grad_norm",
    "dead_units": "activations", "saturated_units": "activations",
    "activation_scale": "activations", "input_scale": "activations",
}
"""The panel that shows a finding's evidence (*show* scrolls there); others go to the events."""


@dataclass
class Group:
    """One code of one run: every event of it, the worst severity, first step, all layers."""

    run: str
    run_label: str
    code: str
    severity: str
    step: int | None
    event_id: int
    layer: str | None
    message: str
    suggestion: str | None
    role: int = PLAIN
    layers: list = field(default_factory=list)
    count: int = 1

    @property
    def panel(self) -> str:
        """The panel whose plots hold this finding's evidence."""
        return PANEL_OF.get(self.code, "events")

    def show_index(self) -> str:
        """The ``index`` of this group's *show* button: run, event id, step, layer, panel."""
        return json.dumps([self.run, self.event_id, self.step, self.layer, self.panel])

    def summary(self) -> str:
        """``"dead_units: 37 layers"`` / ``"nonfinite: 4 events"`` / ``"lr_too_high"``."""
        if len(self.layers) > 1:
            return f"{self.code}: {len(self.layers)} layers"
        if self.count > 1:
            return f"{self.code}: {self.count} events"
        return self.code


def evidence(value) -> dict:
    """An event's evidence as a dict (stored as JSON text or already decoded)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        try:
            out = json.loads(value)
        except ValueError:
            return {}
        return out if isinstance(out, dict) else {}
    return {}


def explained_codes(df: pd.DataFrame) -> set:
    """Codes that another finding in ``df`` says it explains (``explains: ["code@step..."]``)."""
    out = set()
    for ev in df["evidence"] if "evidence" in df else []:
        for item in evidence(ev).get("explains") or []:
            out.add(str(item).split("@", 1)[0])
    return out


def role(ev: dict, code: str, explained: set) -> int:
    """:data:`CAUSE`, :data:`PLAIN` or :data:`CONSEQUENCE` of one event."""
    if ev.get("explains"):
        return CAUSE
    if code in explained or ev.get("explained_by") or ev.get("suppressed_by"):
        return CONSEQUENCE
    return PLAIN


def event_layers(layer, ev: dict) -> list:
    """Every layer one event covers: its evidence's layer list, else its own layer."""
    for key in LAYER_LISTS:
        listed = ev.get(key)
        if isinstance(listed, list) and listed and all(isinstance(x, str) for x in listed):
            return list(listed)
    return [] if layer is None or (isinstance(layer, float) and pd.isna(layer)) else [str(layer)]


def groups(df: pd.DataFrame) -> list:
    """The ranked groups of the events in ``df`` (see the module docstring)."""
    if df is None or not len(df):
        return []
    explained = explained_codes(df)
    out: dict = {}
    for rec in df.itertuples(index=False):
        ev = evidence(getattr(rec, "evidence", None))
        step = None if pd.isna(rec.step) else int(rec.step)
        layer = None if pd.isna(rec.layer) else str(rec.layer)
        key = (rec.run, rec.code)
        g = out.get(key)
        if g is None:
            g = out[key] = Group(rec.run, rec.run_label, rec.code, rec.severity, step,
                                 int(rec.id), layer, rec.message,
                                 rec.suggestion if isinstance(rec.suggestion, str) else None,
                                 role(ev, rec.code, explained), count=0)
        g.count += 1
        for name in event_layers(layer, ev):
            if name not in g.layers:
                g.layers.append(name)
        g.role = min(g.role, role(ev, rec.code, explained))
        if _earlier_or_worse(rec, step, g):
            g.severity, g.step, g.event_id, g.layer = rec.severity, step, int(rec.id), layer
            g.message = rec.message
    return sorted(out.values(), key=rank_key)


def _earlier_or_worse(rec, step, g: Group) -> bool:
    """The group's headline event is its worst, then its earliest."""
    mine = (SEVERITY_RANK.get(rec.severity, 3), _step_key(step))
    theirs = (SEVERITY_RANK.get(g.severity, 3), _step_key(g.step))
    return mine < theirs


def _step_key(step) -> float:
    return float("inf") if step is None else float(step)


def rank_key(g: Group) -> tuple:
    """Severity, then cause before consequence, then step (then code, for a stable order)."""
    return SEVERITY_RANK.get(g.severity, 3), g.role, _step_key(g.step), g.code, g.run


def counts(df: pd.DataFrame) -> dict:
    """Number of groups per severity (what the strip's counters show)."""
    out = dict.fromkeys(schema.SEVERITIES, 0)
    for g in groups(df):
        out[g.severity] = out.get(g.severity, 0) + 1
    return out


def nonfinite_steps(df: pd.DataFrame) -> list:
    """Sorted steps of the NaN/Inf events in ``df``."""
    if df is None or not len(df):
        return []
    sel = df[(df["code"] == schema.NONFINITE) & df["step"].notna()]
    return sorted({int(s) for s in sel["step"]})
