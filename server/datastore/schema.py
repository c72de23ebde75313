"""Schema, versioned migrations and the tiny SQL dialect layer shared by both backends.

Queries are written once with ``?`` placeholders; a :class:`Dialect` renders them::

    POSTGRES.render("SELECT 1 FROM entries WHERE id = ?")   # -> "... WHERE id = %s"
    version = migrate(backend)                               # applies pending migrations
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from spiffe_server.datastore.errors import DataStoreError, SchemaVersionError


class UniqueViolation(DataStoreError):
    """A backend reported a unique-constraint violation (mapped to AlreadyExistsError by the store)."""


class Tx(Protocol):
    """One open transaction."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) and return its rows ([] if none)."""
        ...


class Backend(Protocol):
    """A database connection (or pool) that hands out transactions."""

    dialect: Dialect

    def transaction(self) -> AbstractContextManager[Tx]:
        """A transaction committed on normal exit, rolled back on an exception."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between SQLite and PostgreSQL in our SQL."""

    name: str
    placeholder: str
    blob: str
    migration_lock: str  # statement serialising concurrent migrations ("" if the BEGIN already does)

    def render(self, sql: str) -> str:
        """Turn shared SQL (``?`` placeholders, ``{blob}`` type) into this dialect's SQL."""
        if "%" in sql:
            raise ValueError("schema: shared SQL must not contain '%'")
        return sql.replace("{blob}", self.blob).replace("?", self.placeholder)


SQLITE = Dialect(name="sqlite", placeholder="?", blob="BLOB", migration_lock="")
# Any constant works as the advisory lock key; it only has to be the same for every server.
POSTGRES = Dialect(name="postgresql", placeholder="%s", blob="BYTEA",
                   migration_lock="SELECT pg_advisory_xact_lock(7340423110)")

# Times are integer Unix microseconds; JSON columns hold small bounded lists/maps that are
# only read back whole (filterable parts are normalised into side tables).
_V1 = (
    "CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO counters (name, value) VALUES ('change', 0), ('change_pruned', 0), ('audit', 0)",
    """CREATE TABLE entries (
        id TEXT PRIMARY KEY,
        spiffe_id TEXT NOT NULL,
        parent_id TEXT NOT NULL,
        identity_key TEXT NOT NULL UNIQUE,
        selector_key TEXT NOT NULL,
        selectors TEXT NOT NULL,
        x509_svid_ttl BIGINT NOT NULL,
        jwt_svid_ttl BIGINT NOT NULL,
        dns_names TEXT NOT NULL,
        hint TEXT NOT NULL,
        admin BOOLEAN NOT NULL,
        downstream BOOLEAN NOT NULL,
        federates_with TEXT NOT NULL,
        expires_at BIGINT,
        revision BIGINT NOT NULL,
        created_at BIGINT NOT NULL,
        labels TEXT NOT NULL,
        bind_to_process BOOLEAN NOT NULL,
        max_lifetime BIGINT NOT NULL,
        jwt_claims TEXT NOT NULL,
        quarantined BOOLEAN NOT NULL)""",
    "CREATE INDEX entries_parent_id ON entries (parent_id)",
    "CREATE INDEX entries_spiffe_id ON entries (spiffe_id)",
    "CREATE INDEX entries_selector_key ON entries (selector_key)",
    "CREATE INDEX entries_expires_at ON entries (expires_at)",
    """CREATE TABLE entry_selectors (
        entry_id TEXT NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (entry_id, type, value))""",
    "CREATE INDEX entry_selectors_type_value ON entry_selectors (type, value)",
    """CREATE TABLE entry_labels (
        entry_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (entry_id, key))""",
    """CREATE TABLE agents (
        spiffe_id TEXT PRIMARY KEY,
        attestation_type TEXT NOT NULL,
        serial TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        banned BOOLEAN NOT NULL,
        can_reattest BOOLEAN NOT NULL,
        selectors TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL)""",
    """CREATE TABLE join_tokens (
        token_hash TEXT PRIMARY KEY, expires_at BIGINT NOT NULL, spiffe_id TEXT)""",
    "CREATE TABLE bundles (trust_domain TEXT PRIMARY KEY, data {blob} NOT NULL, sequence BIGINT NOT NULL)",
    "CREATE TABLE ca_journal (id INTEGER PRIMARY KEY, data {blob} NOT NULL)",
    """CREATE TABLE revocations (
        kind TEXT NOT NULL, value TEXT NOT NULL, entry_id TEXT NOT NULL, agent_id TEXT NOT NULL,
        reason TEXT NOT NULL, revoked_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
        PRIMARY KEY (kind, value))""",
    "CREATE INDEX revocations_expires_at ON revocations (expires_at)",
    """CREATE TABLE audit (
        seq BIGINT PRIMARY KEY, time BIGINT NOT NULL, record TEXT NOT NULL, prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL, spiffe_id TEXT NOT NULL, decision TEXT NOT NULL)""",
    "CREATE INDEX audit_time ON audit (time)",
    "CREATE TABLE changes (seq BIGINT PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, deleted BOOLEAN NOT NULL)",
)

# the issuance log (one row per signed SVID, pruned at expiry) and the SPIFFE ID and
# signing CA of each revocation (the CA whose CRL must list the serial).
_V2 = (
    """CREATE TABLE issuances (
        kind TEXT NOT NULL, value TEXT NOT NULL, spiffe_id TEXT NOT NULL, entry_id TEXT NOT NULL,
        agent_id TEXT NOT NULL, issuer TEXT NOT NULL, expires_at BIGINT NOT NULL,
        PRIMARY KEY (kind, value))""",
    "CREATE INDEX issuances_entry_id ON issuances (entry_id)",
    "CREATE INDEX issuances_agent_id ON issuances (agent_id)",
    "CREATE INDEX issuances_expires_at ON issuances (expires_at)",
    "ALTER TABLE revocations ADD COLUMN spiffe_id TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE revocations ADD COLUMN issuer TEXT NOT NULL DEFAULT ''",
)

# A counter bumped with every new revocation, so readers notice revocations without reading them.
_V3 = ("INSERT INTO counters (name, value) VALUES ('revocation', 0)",)

# The agent SVID issued by RenewAgent and not yet presented by the agent (SPIRE's
# NewCertSerialNumber / NewCertNotAfter): '' / NULL when none is pending.
_V4 = (
    "ALTER TABLE agents ADD COLUMN new_serial TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE agents ADD COLUMN new_expires_at BIGINT",
)

# Signed checkpoints of the audit chain: (seq, hash, time) of one record, signed by the server.
_V5 = ("""CREATE TABLE audit_checkpoints (
        seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, time BIGINT NOT NULL, signature TEXT NOT NULL)""",)

# Labels set for a bounded time (an approval from the console's inbox), removed when they lapse,
# and the operator's last decision per (entry, rule), which settles the denials up to through_seq;
# the newest denials (the inbox, the per-rule chart) are read by (decision, seq) without a scan.
_V_LABEL_GRANTS = (
    """CREATE TABLE label_grants (
        entry_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at BIGINT NOT NULL,
        granted_by TEXT NOT NULL, PRIMARY KEY (entry_id, key))""",
    "CREATE INDEX label_grants_expires_at ON label_grants (expires_at)",
    """CREATE TABLE approval_decisions (
        entry_id TEXT NOT NULL, rule TEXT NOT NULL, decision TEXT NOT NULL, operator TEXT NOT NULL,
        decided_at BIGINT NOT NULL, through_seq BIGINT NOT NULL, PRIMARY KEY (entry_id, rule))""",
    "CREATE INDEX audit_decision_seq ON audit (decision, seq)",
)


# Federation relationships managed through the admin API (static ones live in the config).
# last_refresh: Unix microseconds of the last good fetch (NULL: never); last_error: the last
# failure's reason ('' after a good fetch).
_FEDERATION = ("""CREATE TABLE federation_relationships (
        trust_domain TEXT PRIMARY KEY, bundle_endpoint_url TEXT NOT NULL, bundle_endpoint_profile TEXT NOT NULL,
        endpoint_spiffe_id TEXT NOT NULL, created_at BIGINT NOT NULL, last_refresh BIGINT,
        last_error TEXT NOT NULL DEFAULT '')""",)


# Audit at scale: each agent's forwarded sub-chain head (so a restart reads no chain), the seq up to
# which that table still has to be filled from older rows (0 once done), and the signed prune anchors
# (the newest pruned record's seq and hash: the chain left after pruning must start right after one).
_V_AUDIT_SCALE = (
    "CREATE TABLE audit_agent_heads (agent_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL)",
    "INSERT INTO counters (name, value) SELECT 'audit_heads_pending', value FROM counters WHERE name = 'audit'",
    """CREATE TABLE audit_prunes (
        seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, time BIGINT NOT NULL, signature TEXT NOT NULL)""",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V_LABEL_GRANTS, _FEDERATION, _V_AUDIT_SCALE)
"""Migration N (1-based) is ``MIGRATIONS[N - 1]``; append new ones, never edit applied ones."""


def migrate(backend: Backend, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Apply pending migrations in one transaction; returns the schema version.

    Raises:
        SchemaVersionError: the database was written by newer code.
    """
    dialect = backend.dialect
    with backend.transaction() as tx:
        if dialect.migration_lock:
            tx.execute(dialect.migration_lock)
        tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY)")
        current = int(tx.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0])
        if current > len(migrations):
            raise SchemaVersionError(
                f"datastore: database schema version {current} is newer than supported version {len(migrations)}")
        for version in range(current + 1, len(migrations) + 1):
            for statement in migrations[version - 1]:
                tx.execute(statement)
            tx.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
    return len(migrations)
