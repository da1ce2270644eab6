"""avionics in an ``accelerate`` loop: ``instrument.watch()`` on the prepared objects, and a
tracker for ``accelerator.log()``.

>>> import instrument
>>> from accelerate import Accelerator
>>> accelerator = Accelerator(gradient_accumulation_steps=2)
>>> model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
>>> monitor = instrument.watch(model, optimizer, run="runs/acc")   # on every process
>>> for x, y in loader:
...     with accelerator.accumulate(model):
...         loss = criterion(model(x), y)
...         accelerator.backward(loss)
...         if accelerator.sync_gradients:
...             accelerator.clip_grad_norm_(model.parameters(), 1.0)
...         optimizer.step()
...         optimizer.zero_grad()
...     monitor.log(loss=loss)        # per micro-batch: averaged over the step
>>> monitor.close()

Steps are real optimizer steps: under ``accelerator.accumulate`` the prepared optimizer calls the
torch optimizer only when gradients sync, so avionics' step count is accelerate's sync count.
Gradients are read at the step, after ``clip_grad_norm_``: ``grad_norm/total`` is the clipped
norm, ``grad_norm/total_before_clip`` what ``clip_grad_norm_`` returned (on the steps where
clipping changed the gradient). ``watch()`` attaches to the torch optimizer inside the
``AcceleratedOptimizer``.
Under ``accelerate launch`` every process calls ``watch()``; process 0 writes the run store.
"""

from __future__ import annotations

import numbers

import torch
from accelerate.tracking import GeneralTracker

import instrument
from instrument.attach import DEFAULT_RUN
from instrument.integrations.common import metric_name


class AvionicsTracker(GeneralTracker):
    """An accelerate tracker: ``accelerator.log({...})`` stores its numbers as scalars of the
    run, at the step being trained; ``init_trackers(..., config=...)`` stores the config in the
    run's meta (``config``)::

        tracker = AvionicsTracker()
        accelerator = Accelerator(log_with=tracker)
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        monitor = tracker.watch(model, optimizer, run="runs/acc")
        accelerator.init_trackers("project", config={"lr": 0.05})

    accelerate calls trackers on the main process only; single-process loops get every value.
    Under ``accelerate launch``, call ``monitor.log(...)`` on every process instead (the
    distributed path averages the ranks' values).
    """

    name = "avionics"
    requires_logging_directory = False
    main_process_only = True

    def __init__(self, monitor=None):
        super().__init__()
        self.monitor = monitor
        self._config = None

    def watch(self, model, optimizer=None, run: str = DEFAULT_RUN, **watch_kwargs):
        """:func:`instrument.watch` the prepared objects; this tracker's values go into that
        run."""
        self.monitor = instrument.watch(model, optimizer, run=run, **watch_kwargs)
        if self._config is not None:
            self.store_init_configuration(self._config)
        return self.monitor

    @property
    def tracker(self):
        return self.monitor

    def store_init_configuration(self, values: dict):
        self._config = dict(values)
        if self.monitor is not None:
            self.monitor.writer.set_meta(config={
                k: v if v is None or isinstance(v, (str, bool, numbers.Number)) else repr(v)
                for k, v in self._config.items()})

    def log(self, values: dict, step: int | None = None, **kwargs):
        if self.monitor is None:
            raise RuntimeError("AvionicsTracker has no run yet: call tracker.watch(model, "
                               "optimizer, run=...) after accelerator.prepare(...)")
        scalars = {metric_name(k, "accelerate/"): v for k, v in values.items()
                   if isinstance(v, numbers.Number) or (isinstance(v, torch.Tensor)
                                                        and v.numel() == 1)}
        if scalars:
            self.monitor.log(scalars)

    def finish(self):
        pass  # the loop closes its monitor (monitor.close())


__all__ = ["AvionicsTracker"]
