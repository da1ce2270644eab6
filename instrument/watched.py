"""The models that have an open monitor, so that ``watch()`` on a model still watched closes
the old monitor first.

Re-running a notebook cell that calls ``watch()`` would otherwise stack monitors on one model:
every step measured once per monitor, and the first run going on recording the new training as
if it continued the old one. One explicit registry, weakly held on both sides: a model or a
monitor that is gone leaves nothing behind.
"""

from __future__ import annotations

import weakref

_OPEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> weakref(Monitor)


def open_monitor(model):
    """The open monitor watching ``model``, or None."""
    ref = _OPEN.get(model)
    monitor = ref() if ref is not None else None
    return None if monitor is None or monitor._closed else monitor


def register(model, monitor) -> None:
    """``monitor`` now watches ``model``."""
    _OPEN[model] = weakref.ref(monitor)


def forget(model, monitor) -> None:
    """``monitor`` closed: ``model`` is no longer watched by it."""
    ref = _OPEN.get(model)
    if ref is not None and ref() is monitor:
        del _OPEN[model]
