"""avionics' instrument half: attach to a training loop, record, and read runs back.

>>> import instrument
>>> monitor = instrument.watch(model, optimizer, run="runs/exp1")
>>> ...                                   # the training loop, unchanged, plus monitor.log(loss=loss)
>>> monitor.close()
>>> run = instrument.load("runs/exp1")    # from any process; imports no torch

Attributes that need torch (``watch``, ``Monitor``) are imported on first use (PEP 562), so
``import instrument.store`` and the dashboard stay torch-free.
"""

from instrument.schedules import (
    Schedule,
    dense_then_every,
    dense_then_pairs,
    every,
    log_spaced,
    never,
)

__version__ = "0.1.0"

_LAZY = {
    "watch": ("instrument.attach", "watch"),
    "unwrap_optimizer": ("instrument.attach", "unwrap_optimizer"),
    "Monitor": ("instrument.monitor", "Monitor"),
    "load": ("instrument.store.reader", "load"),
    "Run": ("instrument.store.reader", "Run"),
    "Keys": ("instrument.store.schema", "Keys"),
}

__all__ = ["Schedule", "dense_then_every", "dense_then_pairs", "every", "log_spaced", "never",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'instrument' has no attribute {name!r}")
