"""Groups of layers to pick at once: the numbered blocks of a model and its module types.

A transformer has hundreds of layers; looking at them one block (``h.3``) or one module type
(``LayerNorm``) at a time is how they are read. The groups come from the runs themselves:

* **path groups**: every numbered child of a container (a path segment that is an integer
  index, ``h.0``, ``h.1``, ... or ``encoder.layer.0``, ``0``, ``1`` of a top-level
  ``Sequential``), when that container has at least two of them (a repeated block). Nested
  numbered children are groups too (``h.0.mlp.0``). Nothing is assumed about the names.
* **type groups**: the layers of each module class (``Linear``, ``LayerNorm``, ...), from the
  run's model summary (``meta["model"]["layers"]``, the same source that names the heatmap
  rows ``0.weight (Linear)``). A run without it offers path groups only.

A group is picked by writing a regular expression into the layer search boxes that matches
exactly the group's layers (of the names it was built from), so what is drawn stays visible and
editable. Pure functions, no Dash.
"""

from __future__ import annotations

import re

MIN_REPEATS = 2
"""A numbered container is a group of groups when it has at least this many numbered children."""


def module_types(meta: dict | None) -> dict:
    """``{module name: class name}`` from a run's model summary (empty when it has none)."""
    model = (meta or {}).get("model") or {}
    layers = model.get("layers") if isinstance(model, dict) else None
    return {m["name"]: m["type"] for m in layers or () if isinstance(m, dict)
            and isinstance(m.get("name"), str) and isinstance(m.get("type"), str)}


def module_type(name: str, types: dict) -> str | None:
    """The class of the module layer ``name`` belongs to: the module itself (activations are
    named by module) or its parent (parameters are ``<module>.<weight|bias|...>``)."""
    if name in types:
        return types[name]
    return types.get(name.rsplit(".", 1)[0]) if "." in name else None


def _segments(name: str) -> list:
    return name.split(".")


def _natural(prefix: str) -> tuple:
    """Sort key: outer blocks first (``h.0`` .. ``h.47`` before the numbered children inside
    them, ``h.0.mlp.0``), numbers as numbers (``h.2`` before ``h.10``)."""
    parts = _segments(prefix)
    return (sum(p.isdigit() for p in parts),
            tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in parts))


def path_groups(names) -> list:
    """Every numbered child of a container with at least :data:`MIN_REPEATS` of them, as path
    prefixes (``["h.0", "h.1", ...]``): outer blocks first, in natural order.

    A segment is a numbered child when it is a non-negative integer (PyTorch names the children
    of ``Sequential`` and ``ModuleList`` so). A name ending in one is the numbered module
    itself (activations are named by module: ``h.0``, or ``0`` in a top-level ``Sequential``).
    """
    children: dict = {}
    for name in names:
        parts = _segments(str(name))
        for i, part in enumerate(parts):
            if part.isdigit():
                container = ".".join(parts[:i])
                children.setdefault(container, set()).add(".".join(parts[:i + 1]))
    out = [child for kids in children.values() if len(kids) >= MIN_REPEATS for child in kids]
    return sorted(out, key=_natural)


def in_path(name: str, prefix: str) -> bool:
    """True if layer ``name`` lies under module path ``prefix`` (or is that module)."""
    return name == prefix or name.startswith(prefix + ".")


def type_groups(names, types: dict) -> dict:
    """``{class name: [layer names]}`` of ``names`` by their module's class (see
    :func:`module_type`); layers of no known class are in none."""
    out: dict = {}
    for name in names:
        kind = module_type(str(name), types)
        if kind is not None:
            out.setdefault(kind, []).append(str(name))
    return {k: out[k] for k in sorted(out)}


def exact_regex(body: str, chosen: set, names) -> str:
    """``body`` as a search-box pattern that matches exactly ``chosen`` among ``names``.

    The search boxes match case-insensitively; where that would take in a name differing only
    in case, the pattern is made case-sensitive with an inline flag group.
    """
    loose = re.compile(body, re.IGNORECASE)
    if {n for n in names if loose.search(n)} == set(chosen):
        return body
    return f"(?-i:{body})"


def path_regex(prefix: str, names) -> str:
    """A pattern matching the layers under ``prefix`` exactly (``^h\\.1(\\.|$)``)."""
    chosen = {n for n in names if in_path(n, prefix)}
    return exact_regex(f"^{re.escape(prefix)}(\\.|$)", chosen, names)


def names_regex(chosen, names) -> str:
    """A pattern matching exactly the layers ``chosen`` (an anchored alternation)."""
    body = "^(" + "|".join(re.escape(n) for n in sorted(chosen)) + ")$"
    return exact_regex(body, set(chosen), names)


def groups(runs) -> list:
    """The groups offered for the runs being looked at.

    Args:
        runs: per run ``(layer names, meta)``: the names of every layer series it recorded
            and its metadata. Compared runs give the union of their groups.

    Returns:
        ``[{"label", "value", "kind", "layers"}]``: path groups (natural order), then type
        groups (by class name); ``value`` is the search-box pattern picking exactly the group's
        layers, ``layers`` how many layers it holds.
    """
    names, types_of = set(), {}
    for layer_names, meta in runs:
        names.update(str(n) for n in layer_names)
        for kind, members in type_groups(layer_names, module_types(meta)).items():
            types_of.setdefault(kind, set()).update(members)
    ordered = sorted(names)
    out = []
    for prefix in path_groups(ordered):
        count = sum(in_path(n, prefix) for n in ordered)
        out.append({"label": f"path {prefix} ({_layers(count)})",
                    "value": path_regex(prefix, ordered), "kind": "path", "layers": count})
    for kind in sorted(types_of):
        chosen = types_of[kind]
        out.append({"label": f"type {kind} ({_layers(len(chosen))})",
                    "value": names_regex(chosen, ordered), "kind": "type",
                    "layers": len(chosen)})
    return out


def _layers(n: int) -> str:
    return f"{n} layer{'' if n == 1 else 's'}"
