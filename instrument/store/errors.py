"""Errors a reader of the store can meet. Each message says what is wrong and what to do."""

from __future__ import annotations


class StoreError(Exception):
    """Base class: the run store cannot be read as asked."""


class RunNotFoundError(StoreError):
    """There is no run store at the given path."""


class StoreCorruptError(StoreError):
    """The file exists but is not a readable avionics store (truncated, corrupt, foreign)."""


class StoreLockedError(StoreError):
    """Another process holds a lock on the store longer than the reader waits."""


class SchemaVersionError(StoreError):
    """The store was written by a newer avionics with a schema this reader does not know."""
