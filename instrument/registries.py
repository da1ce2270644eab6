"""The check every registry of avionics makes (instruments, Cockpit instruments, rules, dashboard
panels): a name registered twice is an error when the registry is built, not a silent shadowing
of one entry by another (schedules, thresholds and component ids are keyed by these names).

Torch-free: the dashboard's panel registry uses it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable


def unique(entries: Iterable, name_of: Callable, what: str) -> tuple:
    """``entries`` as a tuple, after checking that ``name_of(entry)`` is unique among them."""
    entries = tuple(entries)
    seen: dict = {}
    for entry in entries:
        name = name_of(entry)
        if name in seen:
            raise ValueError(f"two {what} are registered under the name {name!r}: "
                             f"{seen[name]!r} and {entry!r}; every {what[:-1]} needs its own")
        seen[name] = entry
    return entries
