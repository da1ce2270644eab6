"""avionics in Hugging Face ``Trainer``: one callback.

>>> from instrument.integrations.transformers import AvionicsCallback
>>> trainer = Trainer(model=model, args=args, train_dataset=data,
...                   callbacks=[AvionicsCallback(run="runs/gpt2")])
>>> trainer.train()

What it records, besides everything ``instrument.watch()`` records:

* ``loss`` per optimizer step, as Trainer computes it for its own logging (what it logs as
  ``loss`` with ``logging_steps=1``): the model's loss of each micro-batch, summed over the
  micro-batches of the step when Trainer passed ``num_items_in_batch`` (each is then already a
  share of the step's token mean) and averaged over them otherwise. Trainer itself logs the
  average over ``logging_steps`` steps (500 by default), and replaces a NaN/Inf loss by the
  running average (``logging_nan_inf_filter``); avionics keeps every step's value, NaN
  included, so that the NaN is seen.
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

The loss is the model's own returned loss. A ``Trainer`` subclass that overrides
``compute_loss``, a ``compute_loss_func`` or label smoothing compute a loss the model does not
return: then no loss is recorded (one info event says so) and ``callback.monitor.log(loss=...)``
records one.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from transformers import TrainerCallback

import instrument
from instrument.attach import DEFAULT_RUN
from instrument.integrations.common import metric_name, note
from instrument.store.schema import Keys

BEFORE_CLIP = Keys.GRAD_NORM_TOTAL_BEFORE_CLIP
"""Scalar key of the global gradient norm before clipping (what Trainer logs as ``grad_norm``)."""

EVAL_PREFIX = "eval_"


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
        self._loss: _TrainerLoss | None = None

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
        self._loss = _TrainerLoss(model, args)

    def on_step_end(self, args, state, control, **kwargs):
        if self.monitor is None:
            return
        loss = self._loss.take()
        if loss is not None:
            self.monitor.log({Keys.LOSS: loss})
        elif not self._loss.noted:
            self._loss.noted = True
            note(self.monitor, "No loss recorded: the model returned none in this step's "
                 "training forwards (a Trainer that computes the loss itself: compute_loss "
                 "overridden, compute_loss_func or label smoothing).",
                 suggestion="Log it yourself: callback.monitor.log(loss=loss)")

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


class _TrainerLoss:
    """The loss of each training forward of the model, combined per optimizer step the way
    ``Trainer.training_step`` scales it. Device tensors only: no host sync."""

    def __init__(self, model: torch.nn.Module, args):
        # Trainer multiplies a loss normalized by num_items_in_batch by the number of
        # processes (average_tokens_across_devices); its logged loss is then the mean over ranks
        world = int(getattr(args, "world_size", 1) or 1)
        self.token_scale = world if getattr(args, "average_tokens_across_devices", False) else 1
        self.shares: list = []  # already a share of the step's mean (num_items_in_batch)
        self.means: list = []   # per-micro-batch means: Trainer divides each by their count
        self.noted = False
        self.handle = model.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        if not torch.is_grad_enabled() or not module.training:
            return None
        loss = _output_loss(output, "labels" in kwargs)
        if loss is None:
            return None
        loss = loss.detach().float().mean()  # mean(): DataParallel returns one per device
        if kwargs.get("num_items_in_batch") is not None:
            self.shares.append(loss * self.token_scale)
        else:
            self.means.append(loss)
        return None

    def take(self):
        """This step's loss (a 0-d tensor on the device), or None; resets for the next step."""
        parts = []
        if self.shares:
            parts.append(torch.stack(self.shares).sum())
        if self.means:
            parts.append(torch.stack(self.means).mean())
        self.shares, self.means = [], []
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else parts[0] + parts[1]

    def remove(self) -> None:
        self.handle.remove()


def _output_loss(output, has_labels: bool):
    """The loss a Hugging Face model returned: ``output.loss`` of a ``ModelOutput`` (a dict),
    or the first element of a tuple when labels were passed (``return_dict=False``)."""
    if isinstance(output, Mapping):
        loss = output.get("loss")
    elif isinstance(output, (tuple, list)) and has_labels and output:
        loss = output[0]
    else:
        loss = None
    return loss if isinstance(loss, torch.Tensor) and loss.numel() >= 1 else None


__all__ = ["AvionicsCallback", "BEFORE_CLIP"]
