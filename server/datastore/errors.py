"""Errors raised by the server datastore.

The API layer maps them to gRPC codes with ``grpc_status``::

    try:
        store.get_entry(entry_id)
    except NotFoundError:
        ...
"""

from __future__ import annotations

from spiffe_py.errors import SpiffeError


class DataStoreError(SpiffeError):
    """The datastore failed (database unreachable, corrupt or unexpected state)."""

    grpc_status = "INTERNAL"


class NotFoundError(DataStoreError, LookupError):
    """The requested record does not exist."""

    grpc_status = "NOT_FOUND"


class AlreadyExistsError(DataStoreError):
    """A record with the same identity already exists."""

    grpc_status = "ALREADY_EXISTS"


class InvalidArgumentError(DataStoreError, ValueError):
    """A value broke a datastore bound; ``field`` names the offending field."""

    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"datastore: {field}: {reason}")


class ConflictError(DataStoreError):
    """A conditional write lost against a concurrent one (e.g. audit chain moved on)."""

    grpc_status = "ABORTED"


class LimitExceededError(DataStoreError):
    """A table reached its configured bound."""

    grpc_status = "RESOURCE_EXHAUSTED"


class SchemaVersionError(DataStoreError):
    """The database schema is newer than this code understands."""
