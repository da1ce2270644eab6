"""Finding an object among the callers of a hook: the ``GradScaler`` whose ``step()`` called
``optimizer.step()``, the Hugging Face ``Trainer`` that fired a callback event. Neither is handed
to the hook, and both are the ``self`` of a method a few frames up."""

from __future__ import annotations

import sys


def calling_instance(cls, skip: int, frames: int, methods=None):
    """The first ``self`` of type ``cls`` in ``frames`` frames, searched from ``skip`` frames up
    from this function (``skip=1``: its caller) outwards, or None.

    Only frames of methods (``self`` as first argument) are read, and with ``methods`` only
    those of these names: reading ``f_locals`` builds a dict of the frame's locals, which a
    search made at every step should not do for every frame.
    """
    frame = sys._getframe(skip)
    for _ in range(frames):
        if frame is None:
            return None
        code = frame.f_code
        if (methods is None or code.co_name in methods) and code.co_argcount and \
                code.co_varnames[0] == "self":
            owner = frame.f_locals.get("self")
            if isinstance(owner, cls):
                return owner
        frame = frame.f_back
    return None
