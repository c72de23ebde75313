"""Errors raised by the server datastore.

The API layer maps them to gRPC codes (server/api/errors.py)::

    try:
        store.get_entry(entry_id)
    except NotFoundError:
        ...
"""

from __future__ import annotations

from spiffe_py.errors import SpiffeError


class DataStoreError(SpiffeError):
    """The datastore failed (database unreachable, corrupt or unexpected state)."""


class NotFoundError(DataStoreError, LookupError):
    """The requested record does not exist."""


class AlreadyExistsError(DataStoreError):
    """A record with the same identity already exists."""


class InvalidArgumentError(DataStoreError, ValueError):
    """A value broke a datastore bound; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"datastore: {field}: {reason}")


class ConflictError(DataStoreError):
    """A conditional write lost against a concurrent one (e.g. audit chain moved on)."""


class LimitExceededError(DataStoreError):
    """A table reached its configured bound."""


class SchemaVersionError(DataStoreError):
    """The database schema is newer than this code understands."""
