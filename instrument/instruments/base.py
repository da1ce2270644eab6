"""The Instrument base class: what every instrument file implements.

An instrument has a ``name`` (its schedule key in ``watch(schedules=...)``), a default schedule,
and two halves that run on different threads:

* **device half, training thread** (only on scheduled steps): ``forward`` (a leaf module's
  output), ``pre_step`` (gradients are final), ``post_step`` (parameters are updated). These
  enqueue device ops that write reductions into the instrument's buffer sections. They must not
  synchronize with the device (no ``.item()``, ``.cpu()``, ``bool(tensor)``) and must not change
  anything the training reads. ``snapshot()`` returns host-side per-step facts (Python values).
* **host half, writer thread**: ``decode(step, info)`` turns the host copy of the sections and
  the snapshot into named series and events. Earlier instruments' results are visible in
  ``step.data`` (the order is the registry order), so derived quantities can combine them.

To add an instrument: one file here with a subclass, one line in ``instruments/__init__.py``
(``REGISTRY``), one test file in ``tests/instrument/instruments/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from instrument.schedules import ScheduleSpec
from instrument.store.records import Event, StepData

if TYPE_CHECKING:
    from instrument.buffer import StatBuffer
    from instrument.context import Context
    from instrument.schedules import Schedule


@dataclass
class HostStep:
    """What ``decode`` sees: the step index, the host copy of the buffer and the step's data."""

    step: int
    flat: np.ndarray
    sections: dict
    data: StepData
    events: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # host facts one decoder leaves for later ones
    late: list = field(default_factory=list)  # StepData of EARLIER steps that a two-step
    # instrument completes now (e.g. alpha of step t, known at t + 1); stored under their step

    def section(self, name: str) -> np.ndarray:
        """A section of the host copy, in its shape."""
        return self.sections[name].host(self.flat)


class Instrument:
    """Base class. Subclasses override the hook methods they need; the rest are no-ops."""

    name: ClassVar[str] = ""
    default_schedule: ClassVar[ScheduleSpec] = 1
    optional: ClassVar[bool] = False
    """Optional instruments (the Cockpit ones) exist only when ``watch(preset=...)`` or
    ``watch(schedules={name: ...})`` asks for them."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.disabled = False

    @classmethod
    def applies(cls, ctx: Context) -> bool:
        """False if this instrument has nothing to measure for this model/optimizer."""
        return True

    def setup(self, buffer: StatBuffer) -> None:
        """Reserve buffer sections (called once by the monitor, before the first step)."""

    def run_schedule(self, schedule: Schedule) -> Schedule:
        """The steps the monitor runs this instrument on, given the user's ``schedule``.
        Two-step instruments extend it (e.g. also the step after each scheduled step)."""
        return schedule

    # ---- device half (training thread) --------------------------------------------------
    def begin_step(self, step: int) -> None:
        """A scheduled step starts: reset per-step Python state."""

    def model_input(self, args: tuple, kwargs: dict) -> None:
        """The watched model is called with ``args``/``kwargs`` (grad-enabled forward)."""

    def forward(self, index: int, module, output) -> None:
        """Leaf module ``ctx.module_names[index]`` produced ``output`` (grad-enabled forward)."""

    def loss_inputs(self, call) -> None:
        """A grad-enabled loss was computed: the criterion given as ``watch(loss_fn=...)`` was
        called or, without one, a standard functional loss was captured on a step where some
        instrument implements this hook (``call``: an :class:`instrument.losses.LossCall`)."""

    def pre_step(self) -> None:
        """Before ``optimizer.step()``: gradients are final (DDP-averaged, unscaled, clipped)."""

    def post_step(self) -> None:
        """After ``optimizer.step()``: parameters and optimizer state are updated."""

    def optimizer_changed(self) -> list:
        """The optimizer's parameter groups changed (``add_param_group``); ``ctx.opt_params``
        and ``ctx.group_of`` are already re-read. Register hooks for newly held parameters and
        return their handles (removed at ``close()``)."""
        return []

    def attach(self) -> list:
        """Register hooks of the instrument's own (e.g. per-parameter); return their handles,
        which the monitor removes at ``close()``. Not scheduled: they run every step."""
        return []

    def end_step(self) -> None:
        """The step is about to be copied to the host: finish per-step device work."""

    def snapshot(self) -> Any:
        """Host-side facts of this step for :meth:`decode` (called when the step is committed)."""
        return None

    # ---- host half (writer thread) -----------------------------------------------------
    def decode(self, step: HostStep, info: Any) -> None:
        """Add this step's series to ``step.data`` and events to ``step.events``."""

    # ---- shared helpers -----------------------------------------------------------------
    def overrides(self, method: str) -> bool:
        """True if this instrument implements hook ``method`` (the monitor dispatches only to those)."""
        return getattr(type(self), method) is not getattr(Instrument, method)

    def event(self, code: str, severity: str, message: str, step: int | None,
              layer: str | None = None, **evidence) -> Event:
        """An event attributed to this instrument."""
        return Event(code, severity, message, step=step, layer=layer, evidence=evidence or None)
