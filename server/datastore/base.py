"""The datastore interface, split into narrow protocols so consumers depend on little.

Every method is synchronous and thread-safe; asyncio callers use ``asyncio.to_thread``::

    def authorize(store: EntryStore, agent_id: str) -> tuple[RegistrationEntry, ...]:
        return store.list_by_parent_ids([agent_id])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from spiffe_server.datastore.errors import DataStoreError
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
    ChangeBatch,
    EntryFilter,
    FederationRecord,
    Issuance,
    JoinToken,
    LabelGrant,
    Page,
    PageResult,
    RegistrationEntry,
    Revocation,
    RevocationKind,
    RevocationRequest,
    RevokeResult,
)

# what an audit seal callback returns inside the store's transaction: the records, then checkpoints
AuditAppend = tuple[Sequence[AuditRecord], Sequence[AuditCheckpoint]]
# given the entry as written, the seal of its audit records (called with the chain head locked)
EntrySeal = Callable[[RegistrationEntry], Callable[[int, str], AuditAppend]]


class EntryStore(Protocol):
    """Registration entries."""

    def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        """Store a new entry (revision 0, ID generated if empty); AlreadyExistsError on a duplicate."""
        ...

    def update_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        """Replace the entry with ``entry.id`` and bump its revision; keeps ``created_at``."""
        ...

    def delete_entry(self, entry_id: str) -> RegistrationEntry:
        """Delete and return the entry; NotFoundError if absent."""
        ...

    def create_entry_audited(self, entry: RegistrationEntry, seal: EntrySeal) -> AuditedEntry:
        """:meth:`create_entry` and ``seal(created)``'s audit records in one transaction (all or none)."""
        ...

    def update_entry_audited(self, entry: RegistrationEntry, seal: EntrySeal) -> AuditedEntry:
        """:meth:`update_entry` and ``seal(updated)``'s audit records in one transaction (all or none)."""
        ...

    def delete_entry_audited(self, entry_id: str, seal: EntrySeal) -> AuditedEntry:
        """:meth:`delete_entry` and ``seal(deleted)``'s audit records in one transaction (all or none)."""
        ...

    def create_entries(self, entries: Sequence[RegistrationEntry]) -> list[RegistrationEntry | DataStoreError]:
        """Create each entry in one transaction; a failing one gets its error in its place, the rest are stored."""
        ...

    def update_entries(self, entries: Sequence[RegistrationEntry], *,
                       merge: Callable[[RegistrationEntry, RegistrationEntry], RegistrationEntry] | None = None,
                       ) -> list[RegistrationEntry | DataStoreError]:
        """Update each entry in one transaction (``merge(new, stored)`` first when given), failures per entry."""
        ...

    def delete_entries(self, entry_ids: Sequence[str]) -> list[RegistrationEntry | DataStoreError]:
        """Delete each entry in one transaction; an unknown ID gets its NotFoundError."""
        ...

    def get_entry(self, entry_id: str) -> RegistrationEntry:
        """The entry with this ID; NotFoundError if absent."""
        ...

    def list_entries(self, filter: EntryFilter | None = None,
                     page: Page | None = None) -> PageResult[RegistrationEntry]:
        """One page of entries matching ``filter``, ordered by ID."""
        ...

    def count_entries(self, filter: EntryFilter | None = None) -> int:
        """How many entries match ``filter``."""
        ...

    def get_entries(self, entry_ids: Iterable[str]) -> dict[str, RegistrationEntry]:
        """The entries with these IDs (at most 1000), by ID; absent IDs are left out."""
        ...

    def list_by_parent_ids(self, parent_ids: Iterable[str]) -> tuple[RegistrationEntry, ...]:
        """All entries whose parent is one of ``parent_ids`` (at most 1000 IDs)."""
        ...

    def prune_entries(self, *, now: datetime) -> int:
        """Delete entries whose ``expires_at`` is before ``now``; returns how many."""
        ...


class ChangeStore(Protocol):
    """A global, monotonically increasing change log (entries, agents, bundles)."""

    def change_seq(self) -> int:
        """The sequence number of the newest committed change (0 if none)."""
        ...

    def changes_since(self, seq: int, *, limit: int = 1000) -> ChangeBatch:
        """Changes with a sequence number above ``seq``, oldest first."""
        ...

    def watch_changes(self, on_change: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``on_change()`` from another thread on every commit of a change: this store's own as it
        returns, other servers' when the backend can push them. A stopper, or None (poll for other servers')."""
        ...

    def prune_changes(self, *, keep_last: int) -> int:
        """Forget all but the newest ``keep_last`` changes; returns how many were removed."""
        ...


class AgentStore(Protocol):
    """Attested node agents."""

    def create_agent(self, agent: AttestedAgent) -> AttestedAgent:
        """Store a new agent; AlreadyExistsError if its SPIFFE ID is known."""
        ...

    def update_agent(self, agent: AttestedAgent) -> AttestedAgent:
        """Replace the agent with ``agent.spiffe_id`` (keeps ``created_at``); NotFoundError if absent."""
        ...

    def renew_agent(self, spiffe_id: str, *, serial: str, new_serial: str, new_expires_at: datetime,
                    now: datetime) -> AttestedAgent:
        """Record a renewal's SVID as pending while ``serial`` is current; ConflictError if it is not."""
        ...

    def promote_agent_serial(self, spiffe_id: str, *, serial: str, new_serial: str, now: datetime) -> AttestedAgent:
        """Pending ``new_serial`` becomes current, if the stored serials are still these; else ConflictError."""
        ...

    def get_agent(self, spiffe_id: str) -> AttestedAgent:
        """The agent with this ID; NotFoundError if absent."""
        ...

    def list_agents(self, filter: AgentFilter | None = None, page: Page | None = None) -> PageResult[AttestedAgent]:
        """One page of agents matching ``filter``, ordered by SPIFFE ID."""
        ...

    def count_agents(self, filter: AgentFilter | None = None) -> int:
        """How many agents match ``filter``."""
        ...

    def ban_agent(self, spiffe_id: str, *, now: datetime) -> AttestedAgent:
        """Mark the agent banned; NotFoundError if absent."""
        ...

    def delete_agent(self, spiffe_id: str) -> AttestedAgent:
        """Evict: delete and return the agent; NotFoundError if absent."""
        ...


class JoinTokenStore(Protocol):
    """Single-use join tokens (stored hashed)."""

    def create_join_token(self, token: JoinToken) -> None:
        """Store a new token; AlreadyExistsError if it exists."""
        ...

    def consume(self, token: str, *, now: datetime) -> JoinToken | None:
        """Atomically remove and return the token; None if unknown, used or expired."""
        ...

    def prune_join_tokens(self, *, now: datetime) -> int:
        """Delete expired tokens; returns how many."""
        ...


TokenStore = JoinTokenStore


class BundleStore(Protocol):
    """Trust bundles by trust domain name."""

    def get_bundle(self, trust_domain: str) -> BundleRecord:
        """The bundle of ``trust_domain``; NotFoundError if absent."""
        ...

    def set_bundle(self, bundle: BundleRecord) -> None:
        """Create or replace the bundle of ``bundle.trust_domain``."""
        ...

    def list_bundles(self) -> tuple[BundleRecord, ...]:
        """All bundles, ordered by trust domain."""
        ...

    def delete_bundle(self, trust_domain: str) -> None:
        """Delete a bundle; NotFoundError if absent."""
        ...


class FederationStore(Protocol):
    """Federation relationships by foreign trust domain name."""

    def create_federation(self, record: FederationRecord) -> None:
        """Store a new relationship; AlreadyExistsError if the trust domain has one."""
        ...

    def update_federation(self, record: FederationRecord) -> None:
        """Replace the operator's fields of a relationship; NotFoundError if absent."""
        ...

    def get_federation(self, trust_domain: str) -> FederationRecord:
        """The relationship of ``trust_domain``; NotFoundError if absent."""
        ...

    def list_federations(self) -> tuple[FederationRecord, ...]:
        """All relationships, ordered by trust domain."""
        ...

    def delete_federation(self, trust_domain: str) -> None:
        """Delete a relationship; NotFoundError if absent (its bundle is the caller's to delete)."""
        ...

    def record_federation_refresh(self, trust_domain: str, *, refreshed_at: datetime | None, error: str) -> None:
        """Note a fetch: a good one sets last_refresh and clears the error; a failed one only sets the error."""
        ...


class CaJournalStore(Protocol):
    """The CA's journal, an opaque blob."""

    def load_journal(self, journal_id: int = 1) -> bytes | None:
        """The saved journal ``journal_id`` (one per server CA), or None if never saved."""
        ...

    def save_journal(self, data: bytes, journal_id: int = 1) -> None:
        """Replace the journal ``journal_id``."""
        ...

    def list_journals(self) -> dict[int, bytes]:
        """Every server CA's journal by ID."""
        ...


class RevocationStore(Protocol):
    """Revoked X.509 serials and JWT IDs."""

    def add_revocation(self, revocation: Revocation) -> None:
        """Record a revocation (idempotent); LimitExceededError when the table is full."""
        ...

    def add_revocations(self, revocations: Sequence[Revocation]) -> tuple[Revocation, ...]:
        """Record revocations in one transaction (all or none); returns those that were new."""
        ...

    def revoke(self, request: RevocationRequest,
               seal: Callable[[Sequence[Revocation]], Callable[[int, str], AuditAppend]]) -> RevokeResult:
        """Revoke, evict/delete and append ``seal(revocations)``'s audit records in one transaction (all or none).

        NotFoundError (entry/agent), LimitExceededError or ConflictError (audit chain moved) write nothing.
        """
        ...

    def is_revoked(self, kind: RevocationKind, value: str) -> bool:
        """True if this serial or jti is revoked (expired revocations included until pruned)."""
        ...

    def revocation_seq(self) -> int:
        """A number that grows whenever a revocation is added (0 if none ever was)."""
        ...

    def list_revocations(self, *, now: datetime) -> tuple[Revocation, ...]:
        """Revocations not yet expired at ``now``."""
        ...

    def list_revocations_page(self, *, now: datetime, page: Page | None = None) -> PageResult[Revocation]:
        """One page of the revocations not yet expired at ``now``, ordered by kind and value."""
        ...

    def count_revocations(self) -> int:
        """How many revocations are stored (expired ones included until pruned)."""
        ...

    def prune_revocations(self, *, now: datetime) -> int:
        """Delete revocations expired at ``now``; returns how many."""
        ...


class IssuanceStore(Protocol):
    """The issuance log: every SVID the server signed, until it expires."""

    def record_issuances(self, issuances: Sequence[Issuance]) -> None:
        """Log signed SVIDs in one transaction."""
        ...

    def get_issuance(self, kind: RevocationKind, value: str) -> Issuance:
        """The logged SVID with this serial or jti; NotFoundError if unknown."""
        ...

    def list_issuances(self, *, now: datetime, entry_id: str | None = None,
                       agent_id: str | None = None) -> tuple[Issuance, ...]:
        """Unexpired logged SVIDs of an entry or an agent."""
        ...

    def prune_issuances(self, *, now: datetime) -> int:
        """Forget SVIDs expired at ``now``; returns how many."""
        ...


class AuditStore(Protocol):
    """The append-only audit chain."""

    def append_audit(self, record: AuditRecord) -> AuditRecord:
        """Append; ConflictError unless ``record.prev_hash`` is the newest hash ("" when empty)."""
        ...

    def append_audit_batch(self, records: Sequence[AuditRecord],
                           issuances: Sequence[Issuance] = ()) -> list[AuditRecord]:
        """Append chained records and log ``issuances`` in one transaction; ConflictError writes nothing."""
        ...

    def append_audit_sealed(self, seal: Callable[[int, str], AuditAppend],
                            issuances: Sequence[Issuance] = (),
                            agent_heads: Mapping[str, tuple[int, str]] | None = None) -> list[AuditRecord]:
        """Append what ``seal(newest seq, newest hash)`` returns, with the chain head locked; one transaction.

        ``agent_heads`` (agent ID -> its newest forwarded record's (seq, hash)) are stored with it.
        """
        ...

    def audit_head(self) -> AuditRecord | None:
        """The newest record (one indexed read)."""
        ...

    def get_audit(self, seq: int) -> AuditRecord | None:
        """The record ``seq``, if stored."""
        ...

    def audit_seq_before(self, time: datetime) -> int:
        """The seq of the newest record older than ``time`` (0 if none)."""
        ...

    def audit_agent_head(self, agent_id: str) -> tuple[int, str] | None:
        """(seq, hash) of the newest record forwarded for ``agent_id``, if any."""
        ...

    def audit_heads_pending(self) -> int:
        """The seq up to which older rows still have to be scanned for agent heads (0: none)."""
        ...

    def fill_audit_agent_heads(self, heads: Mapping[str, tuple[int, str]], *, through: int) -> None:
        """Store heads found in rows up to ``through`` without replacing newer ones; clears the pending mark."""
        ...

    def prune_audit(self, anchor: AuditCheckpoint) -> int:
        """Store the signed prune ``anchor``, delete records and checkpoints up to its seq (one transaction)."""
        ...

    def latest_audit_prune(self) -> AuditCheckpoint | None:
        """The newest prune anchor, if any."""
        ...

    def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store a checkpoint; one already stored for that seq is kept."""
        ...

    def iter_audit_checkpoints(self) -> Iterator[AuditCheckpoint]:
        """Every checkpoint, oldest first."""
        ...

    def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The checkpoint with the highest seq, if any."""
        ...

    def list_audit(self, filter: AuditFilter | None = None, page: Page | None = None) -> PageResult[AuditRecord]:
        """One page of matching records in chain order."""
        ...

    def iter_audit(self) -> Iterator[AuditRecord]:
        """Every record in chain order (fetched page by page)."""
        ...


class ApprovalStore(Protocol):
    """Labels granted for a bounded time and the operators' decisions on approval denials."""

    def grant_label(self, grant: LabelGrant) -> None:
        """Store (or replace) the expiry of one entry label."""
        ...

    def due_label_grants(self, *, now: datetime, limit: int = 1000) -> tuple[LabelGrant, ...]:
        """Grants that expired at or before ``now``, soonest first, at most ``limit``."""
        ...

    def delete_label_grant(self, entry_id: str, key: str) -> None:
        """Forget one grant (absent is fine)."""
        ...

    def list_label_grants(self, *, limit: int = 1000) -> tuple[LabelGrant, ...]:
        """The grants in force, soonest expiry first, at most ``limit``."""
        ...

    def record_approval_decision(self, decision: ApprovalDecision) -> None:
        """Store (or replace) the decision for its (entry, rule)."""
        ...

    def list_approval_decisions(self, *, limit: int = 10_000) -> tuple[ApprovalDecision, ...]:
        """Decisions, newest first, at most ``limit``."""
        ...

    def list_audit_recent(self, filter: AuditFilter | None = None, *, limit: int = 100) -> tuple[AuditRecord, ...]:
        """The newest matching audit records, newest first, at most ``limit``."""
        ...

    def audit_counts_by_minute(self, *, since: datetime, after_seq: int = 0
                               ) -> tuple[tuple[AuditMinuteCount, ...], int]:
        """Per (minute, decision, method, forwarded) counts of the records after ``after_seq`` timed since
        ``since`` (a record counts its ``details.items``, else 1), and the newest seq."""
        ...


class DataStore(
    EntryStore, ChangeStore, AgentStore, JoinTokenStore, BundleStore, CaJournalStore, RevocationStore, IssuanceStore,
    AuditStore, ApprovalStore, FederationStore, Protocol,
):
    """The whole datastore."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...
