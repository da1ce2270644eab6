"""Cockpit's instruments (Schneider, Dangel & Hennig, NeurIPS 2021) for avionics: curvature and
gradient-noise quantities per layer, without changing the training loop.

>>> monitor = instrument.watch(model, optimizer, run="runs/a", loss_fn=criterion,
...                            preset="economy")      # or "business", "full"
>>> monitor = instrument.watch(..., loss_fn=criterion, schedules={"norm_test": 10})

See docs/cockpit.md for the design, every quantity's definition, and the benchmark.
"""

from instrument.cockpit.presets import BUSINESS, ECONOMY, FULL, PRESETS, SECONDARY, Preset, resolve

__all__ = ["BUSINESS", "ECONOMY", "FULL", "PRESETS", "Preset", "SECONDARY", "resolve"]
