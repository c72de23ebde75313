"""The server datastore: registration entries, agents, join tokens, bundles, CA journal,
revocations and the audit chain, on SQLite or PostgreSQL.

    store = open_datastore("postgresql://postgres@127.0.0.1:5432/spiffe")   # or a path / sqlite:///path
    entry = store.create_entry(RegistrationEntry(...))
    page = store.list_entries(EntryFilter(by_parent_id=agent_id), Page(size=500))
"""

from __future__ import annotations

import os

from spiffe_server.datastore._store import SqlDataStore
from spiffe_server.datastore.base import (
    AgentStore,
    ApprovalStore,
    AuditStore,
    BundleStore,
    CaJournalStore,
    ChangeStore,
    DataStore,
    EntryStore,
    IssuanceStore,
    JoinTokenStore,
    RevocationStore,
    TokenStore,
)
from spiffe_server.datastore.errors import (
    AlreadyExistsError,
    ConflictError,
    DataStoreError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    SchemaVersionError,
)
from spiffe_server.datastore.models import (
    AgentFilter,
    ApprovalDecision,
    AttestedAgent,
    AuditCheckpoint,
    AuditedEntry,
    AuditFilter,
    AuditMinuteCount,
    AuditRecord,
    BundleRecord,
    Change,
    ChangeBatch,
    ChangeKind,
    EntryFilter,
    FederationRecord,
    Issuance,
    JoinToken,
    LabelGrant,
    MatchMode,
    Page,
    PageResult,
    RegistrationEntry,
    Revocation,
    RevocationKind,
    RevocationRequest,
    RevokeResult,
    SelectorMatch,
)

__all__ = [
    "AgentFilter",
    "AgentStore",
    "AlreadyExistsError",
    "ApprovalDecision",
    "ApprovalStore",
    "AttestedAgent",
    "AuditCheckpoint",
    "AuditFilter",
    "AuditMinuteCount",
    "AuditRecord",
    "AuditStore",
    "AuditedEntry",
    "BundleRecord",
    "BundleStore",
    "CaJournalStore",
    "Change",
    "ChangeBatch",
    "ChangeKind",
    "ChangeStore",
    "ConflictError",
    "DataStore",
    "DataStoreError",
    "EntryFilter",
    "EntryStore",
    "FederationRecord",
    "InvalidArgumentError",
    "Issuance",
    "IssuanceStore",
    "JoinToken",
    "JoinTokenStore",
    "LabelGrant",
    "LimitExceededError",
    "MatchMode",
    "NotFoundError",
    "Page",
    "PageResult",
    "RegistrationEntry",
    "Revocation",
    "RevocationKind",
    "RevocationRequest",
    "RevocationStore",
    "RevokeResult",
    "SchemaVersionError",
    "SelectorMatch",
    "SqlDataStore",
    "TokenStore",
    "open_datastore",
]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SQLITE_SCHEME = "sqlite://"


def open_datastore(target: str | os.PathLike[str]) -> DataStore:
    """Open by URL scheme: ``postgresql://``/``postgres://``, ``sqlite:///path``, or a plain file/dir path."""
    text = os.fspath(target)
    if text.startswith(_POSTGRES_SCHEMES):
        from spiffe_server.datastore.postgres import open_postgres  # psycopg only when asked for

        return open_postgres(text)
    from spiffe_server.datastore.sqlite import open_sqlite

    return open_sqlite(text.removeprefix(_SQLITE_SCHEME))
