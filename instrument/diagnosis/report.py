"""A readable text report (and a JSON form) of a :class:`~instrument.diagnosis.replay.Diagnosis`."""

from __future__ import annotations

import json
import textwrap

from instrument.store import schema

_ORDER = {schema.CRITICAL: 0, schema.WARNING: 1, schema.INFO: 2}
WIDTH = 100


def _evidence(ev: dict) -> str:
    parts = []
    for k, v in (ev or {}).items():
        if k in ("layers", "per_layer"):
            continue  # a grouped finding's layers get their own line
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, (list, tuple)) and len(v) > 8:
            v = f"[{', '.join(map(str, v[:8]))}, ... {len(v)} in all]"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def text(diag) -> str:
    """The report: a header, the findings (most severe first, then by step), silent rules."""
    meta = diag.meta
    counts = {s: sum(f.severity == s for f in diag.findings) for s in _ORDER}
    explained = sum(f.explained_by is not None for f in diag.findings)
    head = (f"avionics diagnose {diag.run}\n"
            f"run '{meta.get('name')}', {meta.get('status')}, {meta.get('steps', '?')} steps; "
            f"{len(diag.findings)} finding(s): {counts[schema.CRITICAL]} critical, "
            f"{counts[schema.WARNING]} warning, {counts[schema.INFO]} info"
            + (f"; {explained} probably caused by another finding" if explained else ""))
    lines = [head, ""]
    if not diag.findings:
        lines.append("No findings: none of the active rules fired.")
    for f in sorted(diag.findings, key=lambda f: (_ORDER.get(f.severity, 3), f.step or 0)):
        layers = f.layers
        where = (f"  {len(layers)} layers, worst {f.layer}" if len(layers) > 1 else
                 f"  layer {f.layer}" if f.layer else "")
        lines.append(f"{f.severity.upper():8s} step {f.step:<6} {f.code}{where}")
        lines += textwrap.wrap(f.message, WIDTH, initial_indent="  ", subsequent_indent="  ")
        if f.explained_by is not None:
            code, step = f.explained_by
            lines.append(f"  probably caused by {code} (found at step {step}): fix that first")
        if len(layers) > 1:
            lines += textwrap.wrap("layers (worst first): " + ", ".join(layers), WIDTH,
                                   initial_indent="  ", subsequent_indent="    ")
        shown = _evidence(f.evidence)
        if shown:
            lines += textwrap.wrap("evidence: " + shown, WIDTH, initial_indent="  ",
                                   subsequent_indent="    ")
        if f.suggestion:
            lines += textwrap.wrap("try: " + f.suggestion, WIDTH, initial_indent="  ",
                                   subsequent_indent="    ")
        lines.append("")
    silent = {c: s for c, s in diag.status.items() if s != "active"}
    if silent:
        lines.append("Rules that could not run on this run:")
        for code, why in silent.items():
            lines += textwrap.wrap(f"{code}: {why}", WIDTH, initial_indent="  ",
                                   subsequent_indent="    ")
        lines.append("")
    if diag.coverage:
        lines.append("Coverage: what some instruments or rules could not measure on this run:")
        for c in diag.coverage:
            lines += textwrap.wrap(c["message"], WIDTH, initial_indent="  ",
                                   subsequent_indent="    ")
        lines.append("")
    for e in diag.notes:
        lines += textwrap.wrap(f"note: {e.message}", WIDTH, subsequent_indent="  ")
    return "\n".join(lines).rstrip() + "\n"


def as_json(diag) -> str:
    """The findings and rule status as JSON (for scripts)."""
    return json.dumps({
        "run": diag.run,
        "findings": [{"code": f.code, "severity": f.severity, "step": f.step, "layer": f.layer,
                      "layers": f.layers,
                      "message": f.message, "evidence": dict(f.evidence or {}),
                      "suggestion": f.suggestion,
                      "explained_by": (None if f.explained_by is None else
                                       {"code": f.explained_by[0], "step": f.explained_by[1]})}
                     for f in diag.findings],
        "rules": diag.status,
        "coverage": diag.coverage,
        "thresholds": diag.thresholds.overrides(),
    }, indent=2, default=str)
