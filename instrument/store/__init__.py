"""The run store: the only seam between `instrument/` (writes) and `dashboard/` (reads).

Nothing in this package imports torch; a reader process needs only numpy, pandas and sqlite3.
Names are imported on first use (PEP 562), so the store worker process, which only writes,
does not pay for importing pandas.
"""

import importlib

_LAZY = {
    "RunNotFoundError": "errors", "SchemaVersionError": "errors",
    "StoreCorruptError": "errors", "StoreError": "errors", "StoreLockedError": "errors",
    "Downsampled": "reader", "Run": "reader", "is_run_dir": "reader", "load": "reader",
    "store_path": "reader",
    "Event": "records", "LayerValues": "records", "StepData": "records",
    "Keys": "schema",
    "StoreWriter": "writer",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"instrument.store.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'instrument.store' has no attribute {name!r}")
