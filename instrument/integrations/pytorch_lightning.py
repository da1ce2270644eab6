"""avionics in PyTorch Lightning under its older import name (``import pytorch_lightning``).

>>> import pytorch_lightning as pl
>>> from instrument.integrations.pytorch_lightning import AvionicsCallback
>>> trainer = pl.Trainer(callbacks=[AvionicsCallback(run="runs/mlp")], log_every_n_steps=1)

The same callback and logger as :mod:`instrument.integrations.lightning` (what is recorded is
described there), built on ``pytorch_lightning``'s base classes.
"""

from __future__ import annotations

import pytorch_lightning as _pl

from instrument.integrations.lightning_core import BEFORE_CLIP, build

AvionicsCallback, AvionicsLogger = build(_pl)
AvionicsCallback.__module__ = AvionicsLogger.__module__ = __name__

__all__ = ["AvionicsCallback", "AvionicsLogger", "BEFORE_CLIP"]
