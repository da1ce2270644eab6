"""Automatic diagnosis: training-pathology rules over the recorded statistics.

The same rules run live (the :class:`Engine` observes each step on the store's writer thread
and logs findings once) and on a saved run (``avionics diagnose RUN``,
:func:`instrument.diagnosis.replay.diagnose`). Importing this package does not import torch.

>>> from instrument.diagnosis import Thresholds
>>> Thresholds.from_overrides({"dead_fraction": 0.7})
"""

from instrument.diagnosis.engine import Engine
from instrument.diagnosis.facts import RunFacts
from instrument.diagnosis.finding import Finding
from instrument.diagnosis.thresholds import Thresholds

__all__ = ["Engine", "Finding", "RunFacts", "Thresholds"]
