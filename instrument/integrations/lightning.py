"""avionics in Lightning (``import lightning``): a callback, and a logger it adds itself.

>>> import lightning as L
>>> from instrument.integrations.lightning import AvionicsCallback
>>> trainer = L.Trainer(callbacks=[AvionicsCallback(run="runs/mlp")], log_every_n_steps=1)
>>> trainer.fit(module, train_loader, val_loader)

Uses ``lightning.pytorch``; with only ``pytorch_lightning`` installed, that one (for
``import pytorch_lightning`` next to ``lightning``, use
:mod:`instrument.integrations.pytorch_lightning`: Lightning accepts only callbacks of its own
package).

What it records, besides everything ``instrument.watch()`` records on the LightningModule and
its (first) optimizer:

* ``loss``: what ``training_step`` returned, per optimizer step (the mean over the
  micro-batches of ``accumulate_grad_batches``). Lightning divides it by
  ``accumulate_grad_batches`` before backward; avionics records it undivided.
* every metric the module ``self.log()``s to loggers (training and validation; ``train_acc``,
  ``val_loss``, ``x_step``/``x_epoch`` for ``on_step=on_epoch=True``), under its own name, at the
  step being trained when Lightning hands it to its loggers: every ``log_every_n_steps``
  (Lightning's default is 50: pass 1 for every step), at epoch ends and after validation. A
  metric named ``loss`` becomes ``lightning/loss``.
* ``grad_norm/total_before_clip``: with ``gradient_clip_val``, the global gradient norm when
  backward finished, before Lightning clips (the norm ``on_before_optimizer_step`` sees), at the
  steps where clipping changed the gradient; ``grad_norm/total`` is the norm the step used.

Steps are optimizer steps, as Lightning's ``global_step``. Automatic optimization runs forward
and backward inside ``optimizer.step(closure)``; avionics reads the gradients after the closure.
"""

from __future__ import annotations

try:
    import lightning.pytorch as _pl
except ImportError:  # only the older package name is installed
    import pytorch_lightning as _pl

from instrument.integrations.lightning_core import BEFORE_CLIP, build

AvionicsCallback, AvionicsLogger = build(_pl)
AvionicsCallback.__module__ = AvionicsLogger.__module__ = __name__

__all__ = ["AvionicsCallback", "AvionicsLogger", "BEFORE_CLIP"]
