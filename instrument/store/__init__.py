"""The run store: the only seam between `instrument/` (writes) and `dashboard/` (reads).

Nothing in this package imports torch; a reader process needs only numpy, pandas and sqlite3.
"""

from instrument.store.errors import (RunNotFoundError, SchemaVersionError, StoreCorruptError,
                                     StoreError, StoreLockedError)
from instrument.store.reader import Downsampled, Run, is_run_dir, load, store_path
from instrument.store.records import Event, LayerValues, StepData
from instrument.store.schema import Keys
from instrument.store.writer import StoreWriter

__all__ = [
    "Downsampled", "Event", "Keys", "LayerValues", "Run", "RunNotFoundError", "SchemaVersionError",
    "StepData", "StoreCorruptError", "StoreError", "StoreLockedError", "StoreWriter",
    "is_run_dir", "load", "store_path",
]
