"""What every framework integration needs: an info event for what it could not measure, and
scalar names that never collide with avionics' own."""

from __future__ import annotations

from instrument.store.records import Event
from instrument.store.schema import INFO, is_reserved_scalar

INTEGRATION = "integration"
"""Event code of the integrations' notes (something a framework hides, so it is not recorded)."""

def note(monitor, message: str, step: int | None = None, suggestion: str | None = None) -> None:
    """Record an info event on ``monitor``'s run (rank 0's store under torch.distributed)."""
    monitor.writer.submit(Event(code=INTEGRATION, severity=INFO, message=message,
                                step=monitor.step_index if step is None else step,
                                suggestion=suggestion))


def metric_name(key: str, prefix: str, taken: tuple = ()) -> str:
    """The scalar name for a framework's metric ``key``: itself, unless avionics records that
    name itself (``monitor.log()`` refuses those) or the integration does (``taken``); then
    ``prefix + key``, so the framework's value is kept beside avionics' own."""
    return prefix + key if key in taken or is_reserved_scalar(key) else key
