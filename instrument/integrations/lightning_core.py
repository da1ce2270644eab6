"""The Lightning callback and logger, built for one import name (``lightning.pytorch`` or
``pytorch_lightning``: Lightning checks callbacks and loggers against its own base classes, so
each name needs its own classes). Use :mod:`instrument.integrations.lightning` or
:mod:`instrument.integrations.pytorch_lightning`; their docstrings say what is recorded.
"""

from __future__ import annotations

import torch

import instrument
from instrument.attach import DEFAULT_RUN
from instrument.integrations.common import metric_name, note
from instrument.store.schema import Keys

BEFORE_CLIP = Keys.GRAD_NORM_TOTAL_BEFORE_CLIP
"""Scalar key of the global gradient norm before Lightning's ``gradient_clip_val`` clipping."""

METRIC_PREFIX = "lightning/"
"""Prefix of a ``self.log()`` metric whose name avionics records itself (``loss``, ``lr/0``)."""

SKIPPED_METRICS = ("epoch",)
"""Entries Lightning adds to every logged dict itself (the epoch counter), not the module's."""


class LoggerMixin:
    """A Lightning ``Logger`` that stores every metric Lightning hands to loggers (what the
    module ``self.log()``s with ``logger=True``, training and validation, at Lightning's
    ``log_every_n_steps``) as scalars of the callback's run, at the step being trained.
    Made by :class:`AvionicsCallback`, which adds it to ``trainer.loggers``."""

    def __init__(self, callback):
        super().__init__()
        self._callback = callback

    @property
    def name(self):
        return "avionics"

    @property
    def version(self):
        monitor = self._callback.monitor
        return None if monitor is None else monitor.run_dir

    def log_hyperparams(self, params, *args, **kwargs):
        pass  # the run's meta holds the model and optimizer settings

    def log_metrics(self, metrics, step=None):
        # every rank logs (no rank_zero_only): ranks' values are averaged into the run
        # store by the distributed path, as for any monitor.log()
        monitor = self._callback.monitor
        if monitor is None:
            return
        values = {}
        for key, value in metrics.items():
            if key in SKIPPED_METRICS:
                continue
            if isinstance(value, torch.Tensor):
                value = value.detach()
                if value.numel() != 1:
                    continue
            elif not isinstance(value, (int, float)):
                continue
            values[metric_name(key, METRIC_PREFIX, taken=(Keys.LOSS,))] = value
        if values:
            monitor.log(values)



class CallbackMixin:
    """Record a Lightning ``fit`` with avionics.

    Args:
        run: the run directory (as for :func:`instrument.watch`).
        log_metrics: also add :class:`AvionicsLogger` to ``trainer.loggers`` so that the
            module's ``self.log()`` metrics are stored (default True).
        **watch_kwargs: passed to :func:`instrument.watch`.

    ``callback.monitor`` is the :class:`~instrument.monitor.Monitor` while training runs;
    ``callback.logger`` the logger (pass it in ``Trainer(logger=[...])`` yourself if you
    manage the loggers; it is then not added twice).
    """

    logger_class: type = None  # set by build(): the AvionicsLogger of the same package

    def __init__(self, run: str = DEFAULT_RUN, log_metrics: bool = True, **watch_kwargs):
        self.run = run
        self.watch_kwargs = watch_kwargs
        self.monitor = None
        self.logger = self.logger_class(self) if log_metrics else None

    def setup(self, trainer, pl_module, stage):
        if self.logger is not None and not any(lg is self.logger for lg in trainer.loggers):
            trainer.loggers = [*trainer.loggers, self.logger]

    def on_train_start(self, trainer, pl_module):
        if self.monitor is not None:  # a second fit(): a new run
            self.monitor.close()
        optimizers = list(trainer.optimizers)
        self.monitor = instrument.watch(
            pl_module, optimizers[0] if optimizers else None,
            run=self.run, **self.watch_kwargs)
        if len(optimizers) > 1:
            note(self.monitor, f"The module has {len(optimizers)} optimizers; avionics "
                 "counts steps and reads gradients with the first one only.")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.monitor is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return
        loss = loss.detach()
        if pl_module.automatic_optimization:
            # Lightning divided training_step's loss by accumulate_grad_batches for
            # backward; record the loss the module returned (micro-batches are averaged)
            loss = loss * trainer.accumulate_grad_batches
        self.monitor.log({Keys.LOSS: loss})

    def on_train_end(self, trainer, pl_module):
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None

    def on_exception(self, trainer, pl_module, exception):
        if self.monitor is not None:
            self.monitor.close("crashed", error=f"{type(exception).__name__}: {exception}")
            self.monitor = None


def build(pl):
    """``(AvionicsCallback, AvionicsLogger)`` subclassing ``pl.Callback`` and
    ``pl.loggers.Logger`` of the Lightning package ``pl``."""
    logger = type("AvionicsLogger", (LoggerMixin, pl.loggers.Logger),
                  {"__doc__": LoggerMixin.__doc__})
    callback = type("AvionicsCallback", (CallbackMixin, pl.Callback),
                    {"__doc__": CallbackMixin.__doc__, "logger_class": logger})
    return callback, logger
