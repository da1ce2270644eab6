"""Train/eval mode at each optimizer step: the model's, and each dropout and batch-norm module's.

A model left in eval mode after validation trains without dropout and with frozen batch-norm
statistics, silently. The flags are plain Python attributes (``module.training``), read in the
optimizer's pre-step hook: no device work. Recorded as :attr:`DKeys.TRAIN_MODE`, one value per
layer (``"(model)"`` first, then the dropout / batch-norm modules): 1 = train, 0 = eval.
"""

from __future__ import annotations

import numpy as np

from instrument.diagnosis.facts import BATCHNORM, DROPOUT, module_kind
from instrument.instruments.base import HostStep, Instrument
from instrument.store.records import LayerValues
from instrument.store.schema import DKeys


class TrainMode(Instrument):
    name = "train_mode"
    default_schedule = 1

    def setup(self, buffer):
        self.watched = [i for i, m in enumerate(self.ctx.modules)
                        if module_kind(m) in (DROPOUT, BATCHNORM)]
        self.names = [DKeys.MODEL_LAYER] + [self.ctx.module_names[i] for i in self.watched]
        self._flags = None

    def pre_step(self):
        modules = self.ctx.modules
        self._flags = [self.ctx.model.training] + [modules[i].training for i in self.watched]

    def snapshot(self):
        flags, self._flags = self._flags, None
        return flags

    def decode(self, step: HostStep, flags):
        if flags is not None:
            step.data.layers[DKeys.TRAIN_MODE] = LayerValues(self.names,
                                                             np.asarray(flags, dtype=float))
