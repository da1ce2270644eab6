"""Registries refuse duplicate names, and every series avionics records has a reader."""

from __future__ import annotations

import fnmatch

import pytest

from dashboard.panels import PANELS
from instrument.diagnosis.rules import RULES
from instrument.instruments import COCKPIT_INSTRUMENTS, REGISTRY  # (cockpit's: via here)
from instrument.registries import unique
from instrument.store import schema


def test_unique_refuses_a_name_registered_twice():
    class A:
        name = "grad_norm"

    class B:
        name = "grad_norm"

    with pytest.raises(ValueError, match="'grad_norm'"):
        unique((A, B), lambda c: c.name, "instruments")
    assert unique(iter([A]), lambda c: c.name, "instruments") == (A,)


@pytest.mark.parametrize("entries, name_of", [
    (REGISTRY, lambda c: c.name), (COCKPIT_INSTRUMENTS, lambda c: c.name),
    (RULES, lambda r: r.code), (PANELS, lambda p: p.NAME)])
def test_registries_hold_each_name_once(entries, name_of):
    names = [name_of(e) for e in entries]
    assert len(names) == len(set(names)) and all(names)


def _example(spec) -> str:
    """A concrete key the declaration covers (a namespace's child, e.g. ``lr/0``)."""
    return spec.name if spec.itself else f"{spec.name}/0"


def _reservation_only(spec) -> bool:
    """A namespace whose series are all declared one by one (``rank``, ``input``, ...): it only
    reserves the names below it."""
    return (spec.namespace and not spec.itself
            and any(s.name.startswith(spec.name + "/") for s in schema.declared()))


def _read_by_a_panel(spec) -> bool:
    """A panel names the key in its REQUIRES, or asks for it when a run has only that key."""
    key = _example(spec)
    if any(fnmatch.fnmatchcase(key, pattern) for p in PANELS for pattern in p.REQUIRES):
        return True
    keys = {schema.SCALAR: [] if spec.layered else [key], schema.LAYER: [key] if spec.layered
            else []}
    return any(need.key == key for p in PANELS
               for need in p.needs(keys, tuple(v for v, _ in p.OPTIONS)))


def _read_by_a_rule(key: str) -> bool:
    for rule in RULES:
        for k in rule.keys:
            if k == key or (k.endswith("/*") and key.startswith(k[:-1])):
                return True
    return False


def test_every_declared_key_has_a_reader():
    """Each series avionics declares is drawn by a dashboard panel (a dedicated one, or the
    generic one for any per-layer series or built-in scalar no other panel draws) or read by a
    diagnosis rule: a key nobody reads is either dead or missing from the view."""
    unread = [spec.name for spec in schema.declared()
              if spec.kind != schema.USER and not _reservation_only(spec)
              and not (_read_by_a_panel(spec) or _read_by_a_rule(_example(spec)))]
    assert not unread, f"declared series nobody reads: {unread}"
