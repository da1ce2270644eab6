"""avionics in Hugging Face ``Trainer``: one callback.

>>> from instrument.integrations.transformers import AvionicsCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=data,
...                   callbacks=[AvionicsCallback(run="runs/gpt2")])
>>> trainer.train()

What it records, besides everything ``instrument.watch()`` records:

* ``loss`` per optimizer step, exactly as Trainer computes it for its own logging (what it logs
  as ``loss`` with ``logging_steps=1``): the sum of what ``Trainer.training_step`` returned for
  the step's micro-batches, the values Trainer adds up for its log. So it is right whatever
  computes the loss: the model, a ``Trainer`` subclass overriding ``compute_loss`` or
  ``training_step``, a ``compute_loss_func`` or label smoothing, with gradient accumulation and
  ``num_items_in_batch``. Trainer itself logs the average over ``logging_steps`` steps (500 by
  default), and replaces a NaN/Inf loss by the running average (``logging_nan_inf_filter``);
  avionics keeps every step's value, NaN included, so that the NaN is seen.
* ``grad_norm/total_before_clip``: the global gradient norm when backward finished, what Trainer
  logs as ``grad_norm`` (its ``clip_grad_norm_`` return), at every step where ``max_grad_norm``
  clipping changed the gradient; ``grad_norm/total`` is the norm the optimizer used, after
  clipping (Trainer's ``grad_norm`` when clipping changed nothing). Both come from avionics'
  own gradient instrument, at every step whatever ``logging_steps`` is.
* ``eval/<metric>`` for Trainer's evaluation metrics (``eval_loss`` -> ``eval/loss``), at the
  step they were computed after.

The learning rate per parameter group is ``lr/<group>`` (the hyperparams instrument), the lr the
step used, as Trainer's ``learning_rate``.

Under torch.distributed (``torchrun``/``accelerate launch``) the callback attaches on every
rank and the world-process-zero writes the run store (docs/distributed.md); the loss is the mean
over ranks, as Trainer logs it.

How the loss is read. Callbacks are not handed the loss. At ``on_train_begin`` the callback
finds the ``Trainer`` that called it (among its callers) and wraps that instance's
``training_step`` for the length of ``train()``: the wrapper only keeps the returned, already
detached loss tensor (no host sync, nothing the training reads changes) and is removed at
``on_train_end``. A callback invoked by something that is not a ``Trainer`` records no loss,
and one info event says so.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

import instrument
from instrument.attach import DEFAULT_RUN
from instrument.callers import calling_instance
from instrument.integrations.common import metric_name, note
from instrument.store.schema import Keys

BEFORE_CLIP = Keys.GRAD_NORM_TOTAL_BEFORE_CLIP
"""Scalar key of the global gradient norm before clipping (what Trainer logs as ``grad_norm``)."""

EVAL_PREFIX = "eval_"

TRAINER_FRAMES = 8
"""How many callers above ``on_train_begin`` are searched for the Trainer (its callback handler
calls the event two frames below the training loop)."""


class AvionicsCallback(TrainerCallback):
    """Record a Trainer run with avionics (see the module doc for what is recorded).

    Args:
        run: the run directory (as for :func:`instrument.watch`).
        **watch_kwargs: passed to :func:`instrument.watch` (``schedules``, ``preset``,
            ``thresholds``, ``strict``, ...).

    ``callback.monitor`` is the :class:`~instrument.monitor.Monitor` while training runs.
    """

    def __init__(self, run: str = DEFAULT_RUN, **watch_kwargs):
        self.run = run
        self.watch_kwargs = watch_kwargs
        self.monitor = None
        self._loss: _StepLoss | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.monitor is not None:  # a second trainer.train(): a new run
            self._close()
        if model is None or optimizer is None:
            raise RuntimeError("AvionicsCallback needs the model and optimizer that Trainer "
                               "passes to on_train_begin (transformers >= 5)")
        # Trainer's optimizer is accelerate's AcceleratedOptimizer: watch() attaches to the
        # torch optimizer inside it
        self.monitor = instrument.watch(model, optimizer, run=self.run,
                                        **self.watch_kwargs)
        trainer = _calling_trainer()
        if trainer is None:
            note(self.monitor, "No loss recorded: this callback was not called by a "
                 "transformers.Trainer, whose training_step returns the loss.",
                 suggestion="Log it yourself: callback.monitor.log(loss=loss)")
        else:
            self._loss = _StepLoss(trainer)

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is None or self._loss is None:
            return
        loss = self._loss.take()
        if loss is not None:
            self.monitor.log({Keys.LOSS: loss})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.monitor is None or not logs:
            return
        values = {}
        for key, value in logs.items():
            if key.startswith(EVAL_PREFIX) and isinstance(value, (int, float)):
                values[metric_name("eval/" + key[len(EVAL_PREFIX):], "hf/")] = float(value)
        if values:
            self.monitor.log(values)

    def on_train_end(self, args, state, control, **kwargs):
        self._close()

    def _close(self) -> None:
        if self._loss is not None:
            self._loss.remove()
            self._loss = None
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None


class _StepLoss:
    """The loss of each optimizer step: the sum of ``training_step``'s returns over the step's
    micro-batches (see the module doc). Device tensors only: no host sync."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.parts: list = []
        self._own = vars(trainer).get("training_step", _ABSENT)  # another wrapper, or none
        original = trainer.training_step

        def training_step(*args, **kwargs):
            loss = original(*args, **kwargs)
            if isinstance(loss, torch.Tensor) and loss.numel() >= 1:
                self.parts.append(loss.detach().float().mean())
            return loss

        self.wrapper = training_step
        trainer.training_step = training_step

    def take(self):
        """This step's loss (a 0-d tensor on the device), or None; resets for the next step."""
        parts, self.parts = self.parts, []
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else torch.stack(parts).sum()

    def remove(self) -> None:
        if vars(self.trainer).get("training_step") is self.wrapper:
            if self._own is _ABSENT:
                del self.trainer.training_step
            else:
                self.trainer.training_step = self._own


_ABSENT = object()


def _calling_trainer():
    """The ``transformers.Trainer`` among the callers of the callback event (read once per
    ``train()``), or None."""
    from transformers import Trainer

    return calling_instance(Trainer, 2, TRAINER_FRAMES)  # from on_train_begin up


__all__ = ["AvionicsCallback", "BEFORE_CLIP"]
