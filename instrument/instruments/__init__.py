"""The built-in instruments, in the order they run and decode (later decoders may use the
results of earlier ones: e.g. ``update`` divides by ``weight_norm``, ``nonfinite`` reads all).

To add an instrument, write one file in this folder and add its class to ``REGISTRY``.
"""

from instrument.cockpit.instruments import COCKPIT_INSTRUMENTS  # noqa: E402  (optional ones)
from instrument.instruments.activations import Activations
from instrument.instruments.adaptive_lr import AdaptiveLR
from instrument.instruments.base import HostStep, Instrument
from instrument.instruments.criterion import Criterion
from instrument.instruments.forward_order import ForwardOrder
from instrument.instruments.grad_norm import GradNorm
from instrument.instruments.hyperparams import Hyperparams
from instrument.instruments.input_stats import InputStats
from instrument.instruments.inputs import Inputs
from instrument.instruments.logits import Logits
from instrument.instruments.nonfinite import NonFinite
from instrument.instruments.scalars import UserScalars
from instrument.instruments.train_mode import TrainMode
from instrument.instruments.update import Update
from instrument.instruments.weight_norm import WeightNorm
from instrument.instruments.zero_grad import ZeroGrad
from instrument.registries import unique

REGISTRY = unique(
    (UserScalars, Hyperparams, GradNorm, WeightNorm, Update, AdaptiveLR, Activations, NonFinite,
     # facts for the diagnosis rules
     ZeroGrad, TrainMode, ForwardOrder, Inputs, InputStats, Criterion, Logits)
    + COCKPIT_INSTRUMENTS, lambda cls: cls.name, "instruments")
"""Instrument classes by run order. ``watch(schedules={name: ...})`` keys are their names.
Optional ones (``Instrument.optional``) exist only when a preset or a schedule names them."""

SCHEDULABLE = tuple(cls.name for cls in REGISTRY if cls is not UserScalars)

__all__ = ["Activations", "AdaptiveLR", "Criterion", "ForwardOrder", "GradNorm", "HostStep",
           "Hyperparams", "InputStats", "Inputs", "Instrument", "Logits", "NonFinite", "REGISTRY", "SCHEDULABLE",
           "TrainMode", "Update", "UserScalars", "WeightNorm", "ZeroGrad"]
