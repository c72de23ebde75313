# ruff: noqa: S608  -- SQL text is assembled only from our own column lists; every value is a bound parameter.
"""The SQL datastore, written once for every backend (see ``schema.Backend``).

    store = SqlDataStore(SqliteBackend(path))     # migrates on open
    entry = store.create_entry(entry)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from spiffe_server.datastore import _codec as codec
from spiffe_server.datastore._query import Clause, agent_where, audit_where, entry_where, revocation_where
from spiffe_server.datastore.base import AuditAppend, EntrySeal
from spiffe_server.datastore.errors import (
    AlreadyExistsError,
    ConflictError,
    DataStoreError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
)
from spiffe_server.datastore.models import (
    MAX_IDS_PER_QUERY,
    MAX_ISSUANCES_PER_QUERY,
    MAX_JOURNAL_BYTES,
    MAX_PAGE_SIZE,
    MAX_REVOCATIONS,
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
    Page,
    PageResult,
    RegistrationEntry,
    Revocation,
    RevocationKind,
    RevocationRequest,
    RevokeResult,
    check_int,
    check_str,
    check_time,
)
from spiffe_server.datastore.schema import Backend, Tx, UniqueViolation, migrate

_FEDERATION_SELECT = ("SELECT trust_domain, bundle_endpoint_url, bundle_endpoint_profile, endpoint_spiffe_id,"
                      " created_at, last_refresh, last_error FROM federation_relationships")


def _federation_row(record: FederationRecord) -> dict[str, object]:
    return {"trust_domain": record.trust_domain, "bundle_endpoint_url": record.bundle_endpoint_url,
            "bundle_endpoint_profile": record.bundle_endpoint_profile,
            "endpoint_spiffe_id": record.endpoint_spiffe_id, "created_at": codec.to_micros(record.created_at),
            "last_refresh": None if record.last_refresh is None else codec.to_micros(record.last_refresh),
            "last_error": record.last_error}


def _federation_record(row: tuple[Any, ...]) -> FederationRecord:
    td, url, profile, endpoint_id, created, refreshed, error = row
    return FederationRecord(trust_domain=td, bundle_endpoint_url=url, bundle_endpoint_profile=profile,
                            endpoint_spiffe_id=endpoint_id, created_at=codec.from_micros(created),
                            last_refresh=None if refreshed is None else codec.from_micros(refreshed),
                            last_error=error)

CHANGE_CHANNEL = "spiffe_py_changes"  # PostgreSQL NOTIFY channel of committed changes (postgres.py LISTENs)

_ENTRY_SELECT = f"SELECT {', '.join('e.' + c for c in codec.ENTRY_COLUMNS)} FROM entries e"
_AGENT_COLS = ", ".join(codec.AGENT_COLUMNS)
_AUDIT_COLS = ", ".join(codec.AUDIT_COLUMNS)
_REVOKE_CHUNK = 300  # revocation rows per INSERT ... RETURNING: 2700 parameters
_INSERT_CHUNK = 500  # rows per multi-row INSERT: at 7 columns 3500 parameters, under every backend's limit


def _insert(tx: Tx, table: str, row: dict[str, object]) -> None:
    # Column names come from our own codec, never from input.
    marks = ", ".join("?" for _ in row)
    tx.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({marks})", list(row.values()))


def _insert_rows(tx: Tx, table: str, columns: Sequence[str], rows: Sequence[dict[str, object]],
                 suffix: str = "") -> None:
    """One multi-row INSERT per chunk of ``_INSERT_CHUNK`` rows (``suffix``: e.g. an ON CONFLICT clause)."""
    cols = ", ".join(columns)
    one = "(" + ", ".join("?" for _ in columns) + ")"
    for start in range(0, len(rows), _INSERT_CHUNK):
        chunk = rows[start:start + _INSERT_CHUNK]
        tx.execute(f"INSERT INTO {table} ({cols}) VALUES {', '.join(one for _ in chunk)}{suffix}",
                   [row[col] for row in chunk for col in columns])


def _insert_issuances(tx: Tx, issuances: Sequence[Issuance]) -> None:
    # cheap on the signing path; a replayed row is ignored
    _insert_rows(tx, "issuances", codec.ISSUANCE_COLUMNS, [codec.issuance_row(i) for i in issuances],
                 " ON CONFLICT (kind, value) DO NOTHING")


def _bump(tx: Tx, counter: str, by: int = 1) -> int:
    """Add ``by`` to ``counter``; its new value."""
    # The row lock taken here serialises writers, so sequence numbers become visible in order.
    return int(tx.execute("UPDATE counters SET value = value + ? WHERE name = ? RETURNING value",
                          (by, counter))[0][0])


def _counter(tx: Tx, counter: str) -> int:
    return int(tx.execute("SELECT value FROM counters WHERE name = ?", (counter,))[0][0])


def _upsert_agent_heads(tx: Tx, heads: Mapping[str, tuple[int, str]], *, replace_newer: bool) -> None:
    action = "DO UPDATE SET seq = excluded.seq, hash = excluded.hash" if replace_newer else "DO NOTHING"
    for agent_id, (seq, hash_) in sorted(heads.items()):
        tx.execute(f"INSERT INTO audit_agent_heads (agent_id, seq, hash) VALUES (?, ?, ?)"
                   f" ON CONFLICT (agent_id) {action}", (agent_id, seq, hash_))


def _as_new(entry: RegistrationEntry) -> RegistrationEntry:
    """``entry`` as created: its ID, or a new UUID when it has none, at revision 0."""
    return entry.as_stored(entry_id=entry.id or str(uuid.uuid4()), revision=0, created_at=entry.created_at)


def _record_change(tx: Tx, kind: ChangeKind, key: str, *, deleted: bool = False) -> None:
    _insert(tx, "changes", {"seq": _bump(tx, "change"), "kind": kind.value, "key": key, "deleted": deleted})


def _revocations_of(issued: Iterable[Issuance], request: RevocationRequest) -> tuple[Revocation, ...]:
    """One revocation per distinct SVID that has not expired at ``request.now``, in key order."""
    unique = {(i.kind.value, i.value): i for i in issued if i.expires_at > request.now}
    return tuple(Revocation(kind=i.kind, value=i.value, revoked_at=request.now, expires_at=i.expires_at,
                            entry_id=i.entry_id, agent_id=i.agent_id, reason=request.reason, spiffe_id=i.spiffe_id,
                            issuer=i.issuer) for _, i in sorted(unique.items(), key=lambda kv: kv[0]))


def _page_of(items: Sequence[object], page: Page, key: str) -> str:
    # We fetch size + 1 rows: the extra one only tells whether another page exists.
    return key if len(items) > page.size else ""


_T = TypeVar("_T")
_A = TypeVar("_A")
# what one item of a batch may fail with; anything else (a lost connection) fails the whole batch
_ITEM_ERRORS = (AlreadyExistsError, NotFoundError, ConflictError, InvalidArgumentError, LimitExceededError)


def _item(tx: Tx, work: Callable[[Tx, _A], _T], arg: _A) -> _T | DataStoreError:
    """``work(tx, arg)`` under a savepoint: on an item error only its own writes are undone."""
    tx.execute("SAVEPOINT batch_item")
    try:
        result = work(tx, arg)
    except _ITEM_ERRORS as err:
        tx.execute("ROLLBACK TO SAVEPOINT batch_item")
        tx.execute("RELEASE SAVEPOINT batch_item")
        return err
    tx.execute("RELEASE SAVEPOINT batch_item")
    return result


# The sealed JSON's method, whether it wraps an agent's record, and its item count, as columns
# (shared SQL has no JSON syntax common to both backends); the records are canonical JSON. Per
# backend: the document read once per row ("OFFSET 0" keeps PostgreSQL from inlining the subquery
# and casting to jsonb once per field), then the fields read from it.
_AUDIT_JSON: dict[str, tuple[str, str, str]] = {
    "sqlite": ("record", "",
               "json_extract(doc, '$.method') AS method,"
               " json_type(doc, '$.details.forwarded') IS NOT NULL AS forwarded,"
               " COALESCE(json_extract(doc, '$.details.items'), 1) AS items"),
    "postgresql": ("record::jsonb", " OFFSET 0",
                   "doc ->> 'method' AS method, doc -> 'details' -> 'forwarded' IS NOT NULL AS forwarded,"
                   " COALESCE((doc -> 'details' ->> 'items')::bigint, 1) AS items"),
}


class SqlDataStore:
    """The datastore over one backend; thread-safe (each method is one transaction)."""

    def __init__(self, backend: Backend, *, max_revocations: int = MAX_REVOCATIONS) -> None:
        self._backend = backend
        self._max_revocations = max_revocations
        self._committed: Callable[[], None] | None = None  # watch_changes' callback, for this store's own commits
        self.schema_version = migrate(backend)

    def close(self) -> None:
        """Release connections."""
        self._backend.close()

    def watch_changes(self, on_change: Callable[[], None]) -> Callable[[], None] | None:
        """Have ``on_change()`` called (from another thread) when any server commits a change.

        This store's own commits call it as they return, whatever the writer; other servers'
        reach it through the backend. Returns a stopper, or None if the backend cannot push
        other servers' changes (SQLite: poll ``changes_since`` for those).
        """
        self._committed = on_change
        listen = getattr(self._backend, "listen", None)
        if listen is None:
            return None
        stopper: Callable[[], None] = listen(on_change)
        return stopper

    @contextmanager
    def _change_tx(self) -> Iterator[Tx]:
        """A transaction for writes that record changes."""
        with self._backend.transaction() as tx:
            # Lock the change counter first: such writers then queue in one order (no deadlock
            # between e.g. a prune and an update) and their sequence numbers commit in order.
            tx.execute("UPDATE counters SET value = value WHERE name = ?", ("change",))
            yield tx
            if self._backend.dialect.name == "postgresql":  # delivered to LISTENing servers at commit
                tx.execute("SELECT pg_notify(?, current_schema())", (CHANGE_CHANNEL,))
        if self._committed is not None:
            self._committed()

    # -- entries -----------------------------------------------------------------------------

    def _insert_entry(self, tx: Tx, entry: RegistrationEntry) -> None:
        row = codec.entry_row(entry)
        similar = tx.execute("SELECT id FROM entries WHERE identity_key = ?", (row["identity_key"],))
        if similar:
            raise AlreadyExistsError(
                f"datastore: similar entry already exists (same parent_id, spiffe_id, selectors): {similar[0][0]!r}")
        try:
            _insert(tx, "entries", row)
        except UniqueViolation as err:
            raise AlreadyExistsError(f"datastore: entry already exists: {entry.id!r}") from err
        for sel in entry.selectors:
            _insert(tx, "entry_selectors", {"entry_id": entry.id, "type": sel.type, "value": sel.value})
        for key, value in entry.labels.items():
            _insert(tx, "entry_labels", {"entry_id": entry.id, "key": key, "value": value})

    def _delete_entry(self, tx: Tx, entry_id: str) -> RegistrationEntry:
        rows = tx.execute(f"DELETE FROM entries WHERE id = ? RETURNING {', '.join(codec.ENTRY_COLUMNS)}", (entry_id,))
        if not rows:
            raise NotFoundError(f"datastore: no such entry: {entry_id!r}")
        tx.execute("DELETE FROM entry_selectors WHERE entry_id = ?", (entry_id,))
        tx.execute("DELETE FROM entry_labels WHERE entry_id = ?", (entry_id,))
        return codec.entry_from_row(rows[0])

    def create_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        """Store a new entry (revision 0, ID generated if empty); AlreadyExistsError on a duplicate."""
        return self._entry_write(self._create, entry, None).entry

    def update_entry(self, entry: RegistrationEntry) -> RegistrationEntry:
        """Replace the entry with ``entry.id`` and bump its revision; keeps ``created_at``."""
        return self._entry_write(self._update, entry, None).entry

    def delete_entry(self, entry_id: str) -> RegistrationEntry:
        """Delete and return the entry; NotFoundError if absent."""
        return self._entry_write(self._delete, entry_id, None).entry

    def create_entry_audited(self, entry: RegistrationEntry, seal: EntrySeal) -> AuditedEntry:
        """:meth:`create_entry` and ``seal(created)``'s audit records in one transaction (all or none)."""
        return self._entry_write(self._create, entry, seal)

    def update_entry_audited(self, entry: RegistrationEntry, seal: EntrySeal) -> AuditedEntry:
        """:meth:`update_entry` and ``seal(updated)``'s audit records in one transaction (all or none)."""
        return self._entry_write(self._update, entry, seal)

    def delete_entry_audited(self, entry_id: str, seal: EntrySeal) -> AuditedEntry:
        """:meth:`delete_entry` and ``seal(deleted)``'s audit records in one transaction (all or none)."""
        return self._entry_write(self._delete, entry_id, seal)

    def _entry_write(self, write: Callable[[Tx, _T], RegistrationEntry], arg: _T,
                     seal: EntrySeal | None) -> AuditedEntry:
        with self._change_tx() as tx:
            entry = write(tx, arg)
            # the audit rows ride in the change's transaction: no change without its record, one commit
            audit = () if seal is None else tuple(self._append_sealed(tx, seal(entry)))
        return AuditedEntry(entry, audit)

    def _create(self, tx: Tx, entry: RegistrationEntry) -> RegistrationEntry:
        entry = _as_new(entry)
        self._insert_entry(tx, entry)
        _record_change(tx, ChangeKind.ENTRY, entry.id)
        return entry

    def _update(self, tx: Tx, entry: RegistrationEntry) -> RegistrationEntry:
        old = self._delete_entry(tx, entry.id)
        entry = entry.as_stored(entry_id=entry.id, revision=old.revision + 1, created_at=old.created_at)
        self._insert_entry(tx, entry)
        _record_change(tx, ChangeKind.ENTRY, entry.id)
        return entry

    def _delete(self, tx: Tx, entry_id: str) -> RegistrationEntry:
        entry = self._delete_entry(tx, entry_id)
        _record_change(tx, ChangeKind.ENTRY, entry_id, deleted=True)
        return entry

    def create_entries(self, entries: Sequence[RegistrationEntry]) -> list[RegistrationEntry | DataStoreError]:
        """:meth:`create_entry` for many entries in one transaction. An entry that would be a
        duplicate (of a stored one or of an earlier one in the batch) gets its AlreadyExistsError in
        its place; the others are stored with a few multi-row statements, not one round trip each."""
        fresh = [_as_new(e) for e in entries]
        rows = [codec.entry_row(e) for e in fresh]
        out: list[RegistrationEntry | DataStoreError] = []
        with self._change_tx() as tx:
            # the change-counter lock taken by _change_tx keeps other entry writers out until commit
            similar = self._entry_ids_by(tx, "identity_key", [str(r["identity_key"]) for r in rows])
            taken = set(self._entry_ids_by(tx, "id", [e.id for e in fresh]))
            stored: list[tuple[RegistrationEntry, dict[str, object]]] = []
            for entry, row in zip(fresh, rows, strict=True):
                key = str(row["identity_key"])
                if key in similar:
                    out.append(AlreadyExistsError("datastore: similar entry already exists "
                                                  f"(same parent_id, spiffe_id, selectors): {similar[key]!r}"))
                elif entry.id in taken:
                    out.append(AlreadyExistsError(f"datastore: entry already exists: {entry.id!r}"))
                else:
                    similar[key] = entry.id
                    taken.add(entry.id)
                    stored.append((entry, row))
                    out.append(entry)
            if stored:
                self._insert_entries(tx, stored)
        return out

    @staticmethod
    def _entry_ids_by(tx: Tx, column: str, values: Sequence[str]) -> dict[str, str]:
        """``{value: entry id}`` for the stored entries whose ``column`` (ours, never input) is in ``values``."""
        found: dict[str, str] = {}
        for start in range(0, len(values), MAX_IDS_PER_QUERY):
            chunk = values[start:start + MAX_IDS_PER_QUERY]
            marks = ", ".join("?" for _ in chunk)
            found.update((str(v), str(i)) for v, i in tx.execute(
                f"SELECT {column}, id FROM entries WHERE {column} IN ({marks})", chunk))
        return found

    @staticmethod
    def _insert_entries(tx: Tx, stored: Sequence[tuple[RegistrationEntry, dict[str, object]]]) -> None:
        _insert_rows(tx, "entries", list(stored[0][1]), [row for _, row in stored])
        _insert_rows(tx, "entry_selectors", ("entry_id", "type", "value"),
                     [{"entry_id": e.id, "type": s.type, "value": s.value} for e, _ in stored for s in e.selectors])
        _insert_rows(tx, "entry_labels", ("entry_id", "key", "value"),
                     [{"entry_id": e.id, "key": k, "value": v} for e, _ in stored for k, v in e.labels.items()])
        last = _bump(tx, "change", len(stored))
        _insert_rows(tx, "changes", ("seq", "kind", "key", "deleted"),
                     [{"seq": last - len(stored) + 1 + n, "kind": ChangeKind.ENTRY.value, "key": e.id,
                       "deleted": False} for n, (e, _) in enumerate(stored)])

    def update_entries(self, entries: Sequence[RegistrationEntry], *,
                       merge: Callable[[RegistrationEntry, RegistrationEntry], RegistrationEntry] | None = None,
                       ) -> list[RegistrationEntry | DataStoreError]:
        """:meth:`update_entry` for many entries in one transaction, each failure alone as in
        :meth:`create_entries`; ``merge(new, stored)`` may carry stored state into the new entry."""

        def update(tx: Tx, entry: RegistrationEntry) -> RegistrationEntry:
            old = self._delete_entry(tx, entry.id)
            new = merge(entry, old) if merge is not None else entry
            new = new.as_stored(entry_id=new.id, revision=old.revision + 1, created_at=old.created_at)
            self._insert_entry(tx, new)
            _record_change(tx, ChangeKind.ENTRY, new.id)
            return new

        with self._change_tx() as tx:
            return [_item(tx, update, entry) for entry in entries]

    def delete_entries(self, entry_ids: Sequence[str]) -> list[RegistrationEntry | DataStoreError]:
        """:meth:`delete_entry` for many IDs in one transaction; an unknown ID gets its NotFoundError."""

        def delete(tx: Tx, entry_id: str) -> RegistrationEntry:
            entry = self._delete_entry(tx, entry_id)
            _record_change(tx, ChangeKind.ENTRY, entry_id, deleted=True)
            return entry

        with self._change_tx() as tx:
            return [_item(tx, delete, entry_id) for entry_id in entry_ids]

    def get_entry(self, entry_id: str) -> RegistrationEntry:
        """The entry with this ID; NotFoundError if absent."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"{_ENTRY_SELECT} WHERE e.id = ?", (entry_id,))
        if not rows:
            raise NotFoundError(f"datastore: no such entry: {entry_id!r}")
        return codec.entry_from_row(rows[0])

    def list_entries(self, filter: EntryFilter | None = None,
                     page: Page | None = None) -> PageResult[RegistrationEntry]:
        """One page of entries matching ``filter``, ordered by ID."""
        page = page or Page()
        where, params = entry_where(filter or EntryFilter(), after=page.token)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"{_ENTRY_SELECT} WHERE {where} ORDER BY e.id LIMIT ?", [*params, page.size + 1])
        items = tuple(codec.entry_from_row(r) for r in rows[: page.size])
        return PageResult(items, _page_of(rows, page, items[-1].id if items else ""))

    def count_entries(self, filter: EntryFilter | None = None) -> int:
        """How many entries match ``filter``."""
        where, params = entry_where(filter or EntryFilter())
        with self._backend.transaction() as tx:
            return int(tx.execute(f"SELECT COUNT(*) FROM entries e WHERE {where}", params)[0][0])

    def get_entries(self, entry_ids: Iterable[str]) -> dict[str, RegistrationEntry]:
        """The entries with these IDs (at most 1000), by ID; absent IDs are left out."""
        ids = sorted(set(entry_ids))
        if len(ids) > MAX_IDS_PER_QUERY:
            raise InvalidArgumentError("entry_ids", f"at most {MAX_IDS_PER_QUERY} allowed, got {len(ids)}")
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"{_ENTRY_SELECT} WHERE e.id IN ({marks})", ids)
        entries = (codec.entry_from_row(r) for r in rows)
        return {e.id: e for e in entries}

    def list_by_parent_ids(self, parent_ids: Iterable[str]) -> tuple[RegistrationEntry, ...]:
        """All entries whose parent is one of ``parent_ids`` (at most 1000 IDs), ordered by ID."""
        ids = sorted(set(parent_ids))
        if len(ids) > MAX_IDS_PER_QUERY:
            raise InvalidArgumentError("parent_ids", f"at most {MAX_IDS_PER_QUERY} allowed, got {len(ids)}")
        if not ids:
            return ()
        marks = ", ".join("?" for _ in ids)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"{_ENTRY_SELECT} WHERE e.parent_id IN ({marks}) ORDER BY e.id", ids)
        return tuple(codec.entry_from_row(r) for r in rows)

    def prune_entries(self, *, now: datetime) -> int:
        """Delete entries whose ``expires_at`` is before ``now``; returns how many."""
        check_time("now", now)
        with self._change_tx() as tx:
            expired = tx.execute("SELECT id FROM entries WHERE expires_at < ?", (codec.to_micros(now),))
            for (entry_id,) in expired:
                self._delete_entry(tx, entry_id)
                _record_change(tx, ChangeKind.ENTRY, entry_id, deleted=True)
        return len(expired)

    # -- change log ----------------------------------------------------------------------------

    def change_seq(self) -> int:
        """The sequence number of the newest committed change (0 if none)."""
        with self._backend.transaction() as tx:
            return _counter(tx, "change")

    def changes_since(self, seq: int, *, limit: int = MAX_PAGE_SIZE) -> ChangeBatch:
        """Changes with a sequence number above ``seq``, oldest first (at most ``limit``)."""
        check_int("seq", seq, high=2**62)
        check_int("limit", limit, low=1, high=MAX_PAGE_SIZE)
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT seq, kind, key, deleted FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                              (seq, limit))
            truncated = seq < _counter(tx, "change_pruned")
        changes = tuple(Change(int(s), ChangeKind(k), key, bool(d)) for s, k, key, d in rows)
        return ChangeBatch(changes, history_truncated=truncated)

    def prune_changes(self, *, keep_last: int) -> int:
        """Forget all but the newest ``keep_last`` changes; returns how many were removed."""
        check_int("keep_last", keep_last, high=2**62)
        with self._backend.transaction() as tx:
            cutoff = _counter(tx, "change") - keep_last
            removed = tx.execute("DELETE FROM changes WHERE seq <= ? RETURNING seq", (cutoff,))
            tx.execute("UPDATE counters SET value = CASE WHEN value < ? THEN ? ELSE value END WHERE name = ?",
                       (cutoff, cutoff, "change_pruned"))
        return len(removed)

    # -- agents --------------------------------------------------------------------------------

    def create_agent(self, agent: AttestedAgent) -> AttestedAgent:
        """Store a new agent; AlreadyExistsError if its SPIFFE ID is known."""
        with self._change_tx() as tx:
            try:
                _insert(tx, "agents", codec.agent_row(agent))
            except UniqueViolation as err:
                raise AlreadyExistsError(f"datastore: agent already exists: {agent.spiffe_id!r}") from err
            _record_change(tx, ChangeKind.AGENT, agent.spiffe_id)
        return agent

    def _update_agent(self, spiffe_id: str, values: dict[str, object], *, serial: str | None = None) -> AttestedAgent:
        """Set ``values``; with ``serial``, only while that is still the agent's current serial."""
        sets = ", ".join(f"{column} = ?" for column in values)
        where, params = "spiffe_id = ?", [spiffe_id]
        if serial is not None:
            where, params = where + " AND serial = ?", [*params, serial]
        with self._change_tx() as tx:
            rows = tx.execute(f"UPDATE agents SET {sets} WHERE {where} RETURNING {_AGENT_COLS}",
                              [*values.values(), *params])
            if not rows:
                self._agent_changed(tx, spiffe_id)
            _record_change(tx, ChangeKind.AGENT, spiffe_id)
        return codec.agent_from_row(rows[0])

    @staticmethod
    def _agent_changed(tx: Tx, spiffe_id: str) -> None:
        """Raise why a conditional agent update matched no row: NotFoundError or ConflictError."""
        if not tx.execute("SELECT 1 FROM agents WHERE spiffe_id = ?", (spiffe_id,)):
            raise NotFoundError(f"datastore: no such agent: {spiffe_id!r}")
        raise ConflictError(f"datastore: agent svid serials changed concurrently: {spiffe_id!r}")

    def update_agent(self, agent: AttestedAgent) -> AttestedAgent:
        """Replace the agent with ``agent.spiffe_id`` (keeps ``created_at``); NotFoundError if absent."""
        row = codec.agent_row(agent)
        del row["created_at"], row["spiffe_id"]
        return self._update_agent(agent.spiffe_id, row)

    def renew_agent(self, spiffe_id: str, *, serial: str, new_serial: str, new_expires_at: datetime,
                    now: datetime) -> AttestedAgent:
        """Record a renewal's agent SVID as pending; the current one (``serial``) stays valid.

        Compare-and-set: applies only while ``serial`` is still the current serial, else
        ConflictError (a re-attestation or another server's promotion came first); NotFoundError
        if the agent is gone. A pending SVID the agent never presented is replaced.
        """
        check_str("serial", serial)
        check_str("new_serial", new_serial, required=True)
        check_time("new_expires_at", new_expires_at)
        check_time("now", now)
        values: dict[str, object] = {"new_serial": new_serial, "new_expires_at": codec.to_micros(new_expires_at),
                                     "updated_at": codec.to_micros(now)}
        return self._update_agent(spiffe_id, values, serial=serial)

    def promote_agent_serial(self, spiffe_id: str, *, serial: str, new_serial: str, now: datetime) -> AttestedAgent:
        """Make the pending agent SVID ``new_serial`` the current one and clear the pending slot.

        Compare-and-set on both serials, so of two servers promoting at once only one writes:
        ConflictError unless the stored current serial is ``serial`` and the pending one is
        ``new_serial`` (re-read and decide again); NotFoundError if the agent is gone. Records an
        agent change: sync streams opened with the superseded SVID end at once.
        """
        check_str("serial", serial)
        check_str("new_serial", new_serial, required=True)
        check_time("now", now)
        with self._change_tx() as tx:
            rows = tx.execute(
                "UPDATE agents SET serial = new_serial, expires_at = new_expires_at, new_serial = '',"
                " new_expires_at = NULL, updated_at = ? WHERE spiffe_id = ? AND serial = ? AND new_serial = ?"
                f" RETURNING {_AGENT_COLS}", (codec.to_micros(now), spiffe_id, serial, new_serial))
            if not rows:
                self._agent_changed(tx, spiffe_id)
            _record_change(tx, ChangeKind.AGENT, spiffe_id)
        return codec.agent_from_row(rows[0])

    def get_agent(self, spiffe_id: str) -> AttestedAgent:
        """The agent with this ID; NotFoundError if absent."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {_AGENT_COLS} FROM agents WHERE spiffe_id = ?", (spiffe_id,))
        if not rows:
            raise NotFoundError(f"datastore: no such agent: {spiffe_id!r}")
        return codec.agent_from_row(rows[0])

    def list_agents(self, filter: AgentFilter | None = None, page: Page | None = None) -> PageResult[AttestedAgent]:
        """One page of agents matching ``filter``, ordered by SPIFFE ID."""
        page = page or Page()
        where, params = agent_where(filter or AgentFilter(), after=page.token)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {_AGENT_COLS} FROM agents WHERE {where} ORDER BY spiffe_id LIMIT ?",
                              [*params, page.size + 1])
        items = tuple(codec.agent_from_row(r) for r in rows[: page.size])
        return PageResult(items, _page_of(rows, page, items[-1].spiffe_id if items else ""))

    def count_agents(self, filter: AgentFilter | None = None) -> int:
        """How many agents match ``filter``."""
        where, params = agent_where(filter or AgentFilter())
        with self._backend.transaction() as tx:
            return int(tx.execute(f"SELECT COUNT(*) FROM agents WHERE {where}", params)[0][0])

    def ban_agent(self, spiffe_id: str, *, now: datetime) -> AttestedAgent:
        """Mark the agent banned; NotFoundError if absent."""
        check_time("now", now)
        return self._update_agent(spiffe_id, {"banned": True, "updated_at": codec.to_micros(now)})

    def delete_agent(self, spiffe_id: str) -> AttestedAgent:
        """Evict: delete and return the agent; NotFoundError if absent."""
        with self._change_tx() as tx:
            rows = tx.execute(f"DELETE FROM agents WHERE spiffe_id = ? RETURNING {_AGENT_COLS}", (spiffe_id,))
            if not rows:
                raise NotFoundError(f"datastore: no such agent: {spiffe_id!r}")
            _record_change(tx, ChangeKind.AGENT, spiffe_id, deleted=True)
        return codec.agent_from_row(rows[0])

    # -- join tokens ---------------------------------------------------------------------------

    def create_join_token(self, token: JoinToken) -> None:
        """Store a new token (hashed); AlreadyExistsError if it exists."""
        row = {"token_hash": codec.token_hash(token.token), "expires_at": codec.to_micros(token.expires_at),
               "spiffe_id": token.spiffe_id}
        with self._backend.transaction() as tx:
            try:
                _insert(tx, "join_tokens", row)
            except UniqueViolation as err:
                raise AlreadyExistsError("datastore: join token already exists") from err

    def consume(self, token: str, *, now: datetime) -> JoinToken | None:
        """Atomically remove and return the token; None if unknown, already used or expired at ``now``."""
        check_str("token", token)
        check_time("now", now)
        # DELETE ... RETURNING: of two racing consumers only one gets the row back.
        with self._backend.transaction() as tx:
            rows = tx.execute("DELETE FROM join_tokens WHERE token_hash = ? RETURNING expires_at, spiffe_id",
                              (codec.token_hash(token),))
        if not rows or codec.from_micros(rows[0][0]) <= now:
            return None
        return JoinToken(token=token, expires_at=codec.from_micros(rows[0][0]), spiffe_id=rows[0][1])

    def prune_join_tokens(self, *, now: datetime) -> int:
        """Delete tokens expired at ``now``; returns how many."""
        check_time("now", now)
        with self._backend.transaction() as tx:
            return len(tx.execute("DELETE FROM join_tokens WHERE expires_at <= ? RETURNING token_hash",
                                  (codec.to_micros(now),)))

    # -- bundles -------------------------------------------------------------------------------

    def get_bundle(self, trust_domain: str) -> BundleRecord:
        """The bundle of ``trust_domain``; NotFoundError if absent."""
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT trust_domain, data, sequence FROM bundles WHERE trust_domain = ?",
                              (trust_domain,))
        if not rows:
            raise NotFoundError(f"datastore: no bundle for trust domain: {trust_domain!r}")
        return BundleRecord(trust_domain=rows[0][0], data=bytes(rows[0][1]), sequence=int(rows[0][2]))

    def set_bundle(self, bundle: BundleRecord) -> None:
        """Create or replace the bundle of ``bundle.trust_domain``."""
        with self._change_tx() as tx:
            tx.execute("INSERT INTO bundles (trust_domain, data, sequence) VALUES (?, ?, ?) ON CONFLICT (trust_domain)"
                       " DO UPDATE SET data = excluded.data, sequence = excluded.sequence",
                       (bundle.trust_domain, bundle.data, bundle.sequence))
            _record_change(tx, ChangeKind.BUNDLE, bundle.trust_domain)

    def list_bundles(self) -> tuple[BundleRecord, ...]:
        """All bundles, ordered by trust domain."""
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT trust_domain, data, sequence FROM bundles ORDER BY trust_domain")
        return tuple(BundleRecord(trust_domain=td, data=bytes(data), sequence=int(seq)) for td, data, seq in rows)

    def delete_bundle(self, trust_domain: str) -> None:
        """Delete a bundle; NotFoundError if absent."""
        with self._change_tx() as tx:
            if not tx.execute("DELETE FROM bundles WHERE trust_domain = ? RETURNING trust_domain", (trust_domain,)):
                raise NotFoundError(f"datastore: no bundle for trust domain: {trust_domain!r}")
            _record_change(tx, ChangeKind.BUNDLE, trust_domain, deleted=True)

    # -- federation relationships --------------------------------------------------------------

    def create_federation(self, record: FederationRecord) -> None:
        """Store a new relationship; AlreadyExistsError if the trust domain has one."""
        try:
            with self._backend.transaction() as tx:
                _insert(tx, "federation_relationships", _federation_row(record))
        except UniqueViolation as err:
            raise AlreadyExistsError(
                f"datastore: federation relationship already exists: {record.trust_domain!r}") from err

    def update_federation(self, record: FederationRecord) -> None:
        """Replace the operator's fields of a relationship; NotFoundError if absent."""
        with self._backend.transaction() as tx:
            if not tx.execute("UPDATE federation_relationships SET bundle_endpoint_url = ?,"
                              " bundle_endpoint_profile = ?, endpoint_spiffe_id = ?"
                              " WHERE trust_domain = ? RETURNING trust_domain",
                              (record.bundle_endpoint_url, record.bundle_endpoint_profile,
                               record.endpoint_spiffe_id, record.trust_domain)):
                raise NotFoundError(f"datastore: no federation relationship for: {record.trust_domain!r}")

    def get_federation(self, trust_domain: str) -> FederationRecord:
        """The relationship of ``trust_domain``; NotFoundError if absent."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"{_FEDERATION_SELECT} WHERE trust_domain = ?", (trust_domain,))
        if not rows:
            raise NotFoundError(f"datastore: no federation relationship for: {trust_domain!r}")
        return _federation_record(rows[0])

    def list_federations(self) -> tuple[FederationRecord, ...]:
        """All relationships, ordered by trust domain."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"{_FEDERATION_SELECT} ORDER BY trust_domain")
        return tuple(_federation_record(row) for row in rows)

    def delete_federation(self, trust_domain: str) -> None:
        """Delete a relationship; NotFoundError if absent."""
        with self._backend.transaction() as tx:
            if not tx.execute("DELETE FROM federation_relationships WHERE trust_domain = ? RETURNING trust_domain",
                              (trust_domain,)):
                raise NotFoundError(f"datastore: no federation relationship for: {trust_domain!r}")

    def record_federation_refresh(self, trust_domain: str, *, refreshed_at: datetime | None, error: str) -> None:
        """Note a fetch: a good one (``refreshed_at``) sets last_refresh and clears the error."""
        check_time("refreshed_at", refreshed_at)
        check_str("error", error)
        with self._backend.transaction() as tx:
            if refreshed_at is None:
                tx.execute("UPDATE federation_relationships SET last_error = ? WHERE trust_domain = ?",
                           (error, trust_domain))
            else:
                tx.execute("UPDATE federation_relationships SET last_refresh = ?, last_error = ''"
                           " WHERE trust_domain = ?",
                           (codec.to_micros(refreshed_at), trust_domain))

    # -- CA journal ----------------------------------------------------------------------------

    def load_journal(self, journal_id: int = 1) -> bytes | None:
        """The saved CA journal ``journal_id`` (one per server CA; 1 by default), or None if never saved."""
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT data FROM ca_journal WHERE id = ?", (journal_id,))
        return bytes(rows[0][0]) if rows else None

    def save_journal(self, data: bytes, journal_id: int = 1) -> None:
        """Replace the CA journal ``journal_id``."""
        if not isinstance(data, bytes) or len(data) > MAX_JOURNAL_BYTES:
            raise InvalidArgumentError("journal", f"must be bytes of at most {MAX_JOURNAL_BYTES} bytes")
        with self._backend.transaction() as tx:
            tx.execute("INSERT INTO ca_journal (id, data) VALUES (?, ?)"
                       " ON CONFLICT (id) DO UPDATE SET data = excluded.data", (journal_id, data))

    def list_journals(self) -> dict[int, bytes]:
        """Every server CA's journal by ID (servers sharing the database publish each other's roots)."""
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT id, data FROM ca_journal ORDER BY id LIMIT 256")
        return {int(r[0]): bytes(r[1]) for r in rows}

    # -- revocations ---------------------------------------------------------------------------

    def add_revocation(self, revocation: Revocation) -> None:
        """Record a revocation (idempotent); LimitExceededError when the table is full."""
        self.add_revocations([revocation])

    def add_revocations(self, revocations: Sequence[Revocation]) -> tuple[Revocation, ...]:
        """Record revocations in one transaction (all or none); returns those that were new.

        Raises LimitExceededError when they would overflow the table; records a change so every
        server sharing the database pushes them.
        """
        if not revocations:
            return ()
        with self._change_tx() as tx:
            added = tuple(rev for rev in revocations if self._insert_revocation(tx, rev))
            # Checked after the inserts so re-revoking is never refused; raising rolls them all back.
            if added and int(tx.execute("SELECT COUNT(*) FROM revocations")[0][0]) > self._max_revocations:
                raise LimitExceededError(f"datastore: revocation list is full ({self._max_revocations}); prune first")
            if added:
                _bump(tx, "revocation")
                _record_change(tx, ChangeKind.REVOCATION, "")
        return added

    def revoke(self, request: RevocationRequest,
               seal: Callable[[Sequence[Revocation]], Callable[[int, str], AuditAppend]]) -> RevokeResult:
        """Revoke, evict/delete and append ``seal(revocations)``'s audit records in one transaction (all or none).

        The SVIDs of ``request.entry_id``/``request.agent_id`` are read inside the transaction, so
        none issued meanwhile escapes an eviction. ``seal`` gets every revocation covered (new or
        already stored) and returns the sealer of the audit rows, which runs with the chain head
        locked (as in :meth:`append_audit_sealed`). NotFoundError (unknown entry/agent) or
        LimitExceededError (``limit``/``agent_quota``) roll everything back.
        """
        now = codec.to_micros(request.now)
        with self._change_tx() as tx:
            issued = list(request.items)
            for column, key in (("entry_id", request.entry_id), ("agent_id", request.agent_id)):
                if key is None:
                    continue
                self._require(tx, "entries" if column == "entry_id" else "agents",
                              "id" if column == "entry_id" else "spiffe_id", key)
                rows = tx.execute(f"SELECT {', '.join(codec.ISSUANCE_COLUMNS)} FROM issuances"
                                  f" WHERE {column} = ? AND expires_at > ? ORDER BY kind, value", (key, now))
                issued.extend(codec.issuance_from_row(r) for r in rows)
            revoked = _revocations_of(issued, request)
            added_keys = self._insert_revocations(tx, revoked)
            added = tuple(r for r in revoked if (r.kind.value, r.value) in added_keys)
            if added:
                self._check_limits(tx, request, now)
                _bump(tx, "revocation")
                _record_change(tx, ChangeKind.REVOCATION, "")
            if request.delete_entry and request.entry_id is not None:
                self._delete_entry(tx, request.entry_id)
                _record_change(tx, ChangeKind.ENTRY, request.entry_id, deleted=True)
            if request.evict_agent and request.agent_id is not None:
                tx.execute("DELETE FROM agents WHERE spiffe_id = ?", (request.agent_id,))
                _record_change(tx, ChangeKind.AGENT, request.agent_id, deleted=True)
            stored = self._append_sealed(tx, seal(revoked))
        return RevokeResult(revoked=revoked, added=added, audit=tuple(stored))

    @staticmethod
    def _require(tx: Tx, table: str, column: str, key: str) -> None:
        if not tx.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (key,)):
            what = "entry" if table == "entries" else "agent"
            raise NotFoundError(f"datastore: no such {what}: {key!r}")

    @staticmethod
    def _insert_revocations(tx: Tx, revoked: Sequence[Revocation]) -> set[tuple[str, str]]:
        """Insert in chunks (a repeat is ignored); the (kind, value) keys that were new."""
        columns = codec.REVOCATION_COLUMNS
        one = "(" + ", ".join("?" for _ in columns) + ")"
        added: set[tuple[str, str]] = set()
        for start in range(0, len(revoked), _REVOKE_CHUNK):
            rows = [codec.revocation_row(r) for r in revoked[start:start + _REVOKE_CHUNK]]
            added.update((str(k), str(v)) for k, v in tx.execute(
                f"INSERT INTO revocations ({', '.join(columns)}) VALUES {', '.join(one for _ in rows)}"
                " ON CONFLICT (kind, value) DO NOTHING RETURNING kind, value",
                [row[col] for row in rows for col in columns]))
        return added

    @staticmethod
    def _check_limits(tx: Tx, request: RevocationRequest, now: int) -> None:
        """Refuse (rolling back) when the unexpired rows now exceed the request's limit or agent quota."""
        if request.limit is not None:
            live = int(tx.execute("SELECT COUNT(*) FROM revocations WHERE expires_at > ?", (now,))[0][0])
            if live > request.limit:
                raise LimitExceededError(f"datastore: revocation list is full for agent requests ({request.limit} "
                                         "unexpired revocations; the rest is reserved for admins)")
        if request.agent_quota is not None:
            mine = int(tx.execute("SELECT COUNT(*) FROM revocations WHERE agent_id = ? AND expires_at > ?",
                                  (request.quota_agent, now))[0][0])
            if mine > request.agent_quota:
                raise LimitExceededError(f"datastore: revocation quota of agent {request.quota_agent!r} is used up "
                                         f"({request.agent_quota} unexpired revocations of its SVIDs)")

    def is_revoked(self, kind: RevocationKind, value: str) -> bool:
        """True if this serial or jti is revoked (expired revocations included until pruned)."""
        with self._backend.transaction() as tx:
            return bool(tx.execute("SELECT 1 FROM revocations WHERE kind = ? AND value = ?", (kind.value, value)))

    def revocation_seq(self) -> int:
        """A number that grows whenever a revocation is added (0 if none ever was)."""
        with self._backend.transaction() as tx:
            return _counter(tx, "revocation")

    @staticmethod
    def _insert_revocation(tx: Tx, rev: Revocation) -> bool:
        row = codec.revocation_row(rev)
        marks = ", ".join("?" for _ in row)
        return bool(tx.execute(f"INSERT INTO revocations ({', '.join(row)}) VALUES ({marks})"
                               " ON CONFLICT (kind, value) DO NOTHING RETURNING value", list(row.values())))

    def list_revocations(self, *, now: datetime) -> tuple[Revocation, ...]:
        """Revocations not yet expired at ``now``, ordered by kind and value."""
        check_time("now", now)
        return tuple(codec.revocation_from_row(r) for r in self._revocation_rows(revocation_where(now=now)))

    def list_revocations_page(self, *, now: datetime, page: Page | None = None) -> PageResult[Revocation]:
        """One page of the revocations not yet expired at ``now``, ordered by kind and value.

        Keyset paging on the primary key: only the page's rows are read. The token is opaque;
        one this listing did not hand out raises InvalidArgumentError.
        """
        check_time("now", now)
        page = page or Page()
        after = codec.revocation_token_key(page.token) if page.token else None
        rows = self._revocation_rows(revocation_where(now=now, after=after), limit=page.size + 1)
        items = tuple(codec.revocation_from_row(r) for r in rows[: page.size])
        return PageResult(items, _page_of(rows, page, codec.revocation_token(items[-1]) if items else ""))

    def _revocation_rows(self, clause: Clause, *, limit: int | None = None) -> list[tuple[Any, ...]]:
        """Rows of ``revocations`` matching ``clause`` in key order (kind, value), at most ``limit``."""
        where, params = clause
        sql = f"SELECT {', '.join(codec.REVOCATION_COLUMNS)} FROM revocations WHERE {where} ORDER BY kind, value"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        with self._backend.transaction() as tx:
            return list(tx.execute(sql, params))

    def count_revocations(self) -> int:
        """How many revocations are stored (expired ones included until pruned)."""
        with self._backend.transaction() as tx:
            return int(tx.execute("SELECT COUNT(*) FROM revocations")[0][0])

    def prune_revocations(self, *, now: datetime) -> int:
        """Delete revocations expired at ``now``; returns how many."""
        check_time("now", now)
        with self._backend.transaction() as tx:
            return len(tx.execute("DELETE FROM revocations WHERE expires_at <= ? RETURNING value",
                                  (codec.to_micros(now),)))

    # -- issuance log -------------------------------------------------------------------------

    def record_issuances(self, issuances: Sequence[Issuance]) -> None:
        """Log signed SVIDs in one transaction."""
        with self._backend.transaction() as tx:
            _insert_issuances(tx, issuances)

    def get_issuance(self, kind: RevocationKind, value: str) -> Issuance:
        """The logged SVID with this serial or jti; NotFoundError if unknown (or pruned)."""
        check_str("value", value)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {', '.join(codec.ISSUANCE_COLUMNS)} FROM issuances WHERE kind = ? AND value = ?",
                              (kind.value, value))
        if not rows:
            raise NotFoundError(f"datastore: no issued {kind.value} {value!r}")
        return codec.issuance_from_row(rows[0])

    def list_issuances(self, *, now: datetime, entry_id: str | None = None,
                       agent_id: str | None = None) -> tuple[Issuance, ...]:
        """Unexpired logged SVIDs of an entry or an agent (at most MAX_ISSUANCES_PER_QUERY)."""
        check_time("now", now)
        if (entry_id is None) == (agent_id is None):
            raise ValueError("datastore: give exactly one of entry_id and agent_id")
        column, key = ("entry_id", entry_id) if entry_id is not None else ("agent_id", agent_id)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {', '.join(codec.ISSUANCE_COLUMNS)} FROM issuances"
                              f" WHERE {column} = ? AND expires_at > ? ORDER BY kind, value LIMIT ?",
                              (key, codec.to_micros(now), MAX_ISSUANCES_PER_QUERY))
        return tuple(codec.issuance_from_row(r) for r in rows)

    def prune_issuances(self, *, now: datetime) -> int:
        """Forget SVIDs expired at ``now``; returns how many."""
        check_time("now", now)
        with self._backend.transaction() as tx:
            return len(tx.execute("DELETE FROM issuances WHERE expires_at <= ? RETURNING value",
                                  (codec.to_micros(now),)))

    # -- audit ---------------------------------------------------------------------------------

    def append_audit(self, record: AuditRecord) -> AuditRecord:
        """Append; ConflictError unless ``record.prev_hash`` is the newest hash ("" when empty)."""
        return self.append_audit_batch([record])[0]

    def append_audit_batch(self, records: Sequence[AuditRecord],
                           issuances: Sequence[Issuance] = ()) -> list[AuditRecord]:
        """Append chained records and log ``issuances``, all in one transaction (all or nothing).

        ConflictError, with nothing written, unless the first record's ``prev_hash`` is the
        newest hash ("" when empty) and each later one's is its predecessor's ``hash``.
        """
        with self._backend.transaction() as tx:
            stored = self._append_audit(tx, records)
            _insert_issuances(tx, issuances)
        return stored

    def append_audit_sealed(self, seal: Callable[[int, str], AuditAppend],
                            issuances: Sequence[Issuance] = (),
                            agent_heads: Mapping[str, tuple[int, str]] | None = None) -> list[AuditRecord]:
        """Append the records ``seal(seq, hash)`` chains after the newest record, with the chain head locked.

        ``seq`` is the newest record's seq (0 when empty) and ``hash`` its hash ("" when empty or
        when that row is missing). ``seal`` returns the records and, optionally, checkpoints to
        store in the same transaction. Every appender (threads, servers sharing the database)
        queues on the lock, so nothing is sealed after a stale head and no append has to retry.
        ``agent_heads`` (agent ID -> (seq, hash) of its newest forwarded record) are stored in the
        same transaction.
        """
        with self._backend.transaction() as tx:
            stored = self._append_sealed(tx, seal)
            _insert_issuances(tx, issuances)
            _upsert_agent_heads(tx, agent_heads or {}, replace_newer=True)
        return stored

    def audit_head(self) -> AuditRecord | None:
        """The newest record of the chain (one indexed read, whatever the chain's length)."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {_AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT 1")
        return codec.audit_from_row(rows[0]) if rows else None

    def get_audit(self, seq: int) -> AuditRecord | None:
        """The record ``seq``, if stored."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {_AUDIT_COLS} FROM audit WHERE seq = ?", (seq,))
        return codec.audit_from_row(rows[0]) if rows else None

    def audit_seq_before(self, time: datetime) -> int:
        """The seq of the newest record older than ``time`` (0 if none); uses the time index."""
        check_time("time", time)
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT MAX(seq) FROM audit WHERE time < ?", (codec.to_micros(time),))
        return int(rows[0][0] or 0)

    def audit_agent_head(self, agent_id: str) -> tuple[int, str] | None:
        """(seq, hash) of the newest record forwarded for ``agent_id``, if any."""
        with self._backend.transaction() as tx:
            rows = tx.execute("SELECT seq, hash FROM audit_agent_heads WHERE agent_id = ?", (agent_id,))
        return (int(rows[0][0]), str(rows[0][1])) if rows else None

    def audit_heads_pending(self) -> int:
        """The seq up to which older rows were written before agent heads were kept (0: none pending)."""
        with self._backend.transaction() as tx:
            return _counter(tx, "audit_heads_pending")

    def fill_audit_agent_heads(self, heads: Mapping[str, tuple[int, str]], *, through: int) -> None:
        """Store heads found in rows up to ``through`` (newer heads already stored win); clears the pending mark."""
        with self._backend.transaction() as tx:
            _upsert_agent_heads(tx, heads, replace_newer=False)
            tx.execute("UPDATE counters SET value = 0 WHERE name = ? AND value <= ?", ("audit_heads_pending", through))

    def prune_audit(self, anchor: AuditCheckpoint) -> int:
        """Store the signed prune ``anchor`` and delete the records and checkpoints up to its seq; one transaction.

        Returns how many records were deleted.
        """
        with self._backend.transaction() as tx:
            _insert_rows(tx, "audit_prunes", codec.CHECKPOINT_COLUMNS, [codec.checkpoint_row(anchor)],
                         " ON CONFLICT (seq) DO NOTHING")
            deleted = len(tx.execute("DELETE FROM audit WHERE seq <= ? RETURNING seq", (anchor.seq,)))
            tx.execute("DELETE FROM audit_checkpoints WHERE seq <= ?", (anchor.seq,))
        return deleted

    def latest_audit_prune(self) -> AuditCheckpoint | None:
        """The newest prune anchor, if the chain was ever pruned."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {', '.join(codec.CHECKPOINT_COLUMNS)} FROM audit_prunes"
                              " ORDER BY seq DESC LIMIT 1")
        return codec.checkpoint_from_row(rows[0]) if rows else None

    def _append_sealed(self, tx: Tx, seal: Callable[[int, str], AuditAppend]) -> list[AuditRecord]:
        # the row lock on the audit counter serialises chain appends until this transaction ends
        seq = int(tx.execute("UPDATE counters SET value = value WHERE name = ? RETURNING value", ("audit",))[0][0])
        rows = tx.execute("SELECT hash FROM audit WHERE seq = ?", (seq,))
        head = str(rows[0][0]) if rows else None  # None: that row is gone, _append_audit looks for the newest
        records, checkpoints = seal(seq, head or "")
        stored = self._append_audit(tx, records, newest=head)
        _insert_rows(tx, "audit_checkpoints", codec.CHECKPOINT_COLUMNS,
                     [codec.checkpoint_row(cp) for cp in checkpoints], " ON CONFLICT (seq) DO NOTHING")
        return stored

    def add_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        """Store a checkpoint; one already stored for that seq is kept."""
        with self._backend.transaction() as tx:
            _insert_rows(tx, "audit_checkpoints", codec.CHECKPOINT_COLUMNS, [codec.checkpoint_row(checkpoint)],
                         " ON CONFLICT (seq) DO NOTHING")

    def list_audit_checkpoints(self, *, after: int = 0, limit: int = MAX_PAGE_SIZE) -> tuple[AuditCheckpoint, ...]:
        """Checkpoints with seq above ``after``, oldest first, at most ``limit``."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {', '.join(codec.CHECKPOINT_COLUMNS)} FROM audit_checkpoints"
                              " WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))
        return tuple(codec.checkpoint_from_row(r) for r in rows)

    def iter_audit_checkpoints(self) -> Iterator[AuditCheckpoint]:
        """Every checkpoint, oldest first (fetched page by page)."""
        after = 0
        while page := self.list_audit_checkpoints(after=after):
            yield from page
            after = page[-1].seq

    def latest_audit_checkpoint(self) -> AuditCheckpoint | None:
        """The checkpoint with the highest seq, if any."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {', '.join(codec.CHECKPOINT_COLUMNS)} FROM audit_checkpoints"
                              " ORDER BY seq DESC LIMIT 1")
        return codec.checkpoint_from_row(rows[0]) if rows else None

    @staticmethod
    def _append_audit(tx: Tx, records: Sequence[AuditRecord], *, newest: str | None = None) -> list[AuditRecord]:
        """Append records that chain after ``newest`` (the newest stored hash; read here when not given)."""
        if not records:
            return []
        last_seq = _bump(tx, "audit", len(records))  # one bump for the whole batch
        if newest is None:
            newest_row = tx.execute("SELECT hash FROM audit ORDER BY seq DESC LIMIT 1")
            newest = newest_row[0][0] if newest_row else ""
        stored = []
        for seq, record in enumerate(records, start=last_seq - len(records) + 1):
            if record.prev_hash != newest:
                raise ConflictError(f"datastore: audit prev_hash {record.prev_hash!r} is not the newest {newest!r}")
            stored.append(replace(record, seq=seq))
            newest = record.hash
        _insert_rows(tx, "audit", codec.AUDIT_COLUMNS, [codec.audit_row(r) for r in stored])
        return stored

    def list_audit(self, filter: AuditFilter | None = None, page: Page | None = None) -> PageResult[AuditRecord]:
        """One page of matching records in chain order."""
        page = page or Page()
        try:
            after = int(page.token or "0")
        except ValueError:
            raise InvalidArgumentError("page_token", "not a token of this listing") from None
        where, params = audit_where(filter or AuditFilter(), after=after)
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {_AUDIT_COLS} FROM audit WHERE {where} ORDER BY seq LIMIT ?",
                              [*params, page.size + 1])
        items = tuple(codec.audit_from_row(r) for r in rows[: page.size])
        return PageResult(items, _page_of(rows, page, str(items[-1].seq) if items else ""))

    def iter_audit(self) -> Iterator[AuditRecord]:
        """Every record in chain order (fetched page by page)."""
        page = Page(size=MAX_PAGE_SIZE)
        while True:
            result = self.list_audit(page=page)
            yield from result.items
            if not result.next_token:
                return
            page = Page(result.next_token, MAX_PAGE_SIZE)

    def list_audit_recent(self, filter: AuditFilter | None = None, *, limit: int = 100) -> tuple[AuditRecord, ...]:
        """The newest matching audit records, newest first, at most ``limit``."""
        check_int("limit", limit, low=1, high=MAX_PAGE_SIZE)
        flt = filter or AuditFilter()
        # walk the chain backwards from its head and stop at ``limit`` matches; "+time" keeps SQLite
        # from sorting the whole time window instead (a unary plus is valid SQL on both backends)
        parts, params = ["1 = 1"], []
        for column in ("spiffe_id", "decision"):
            value = getattr(flt, column)
            if value is not None:
                parts.append(f"{column} = ?")
                params.append(value)
        if flt.since is not None:
            parts.append("+time >= ?")
            params.append(codec.to_micros(flt.since))
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {_AUDIT_COLS} FROM audit WHERE {' AND '.join(parts)} ORDER BY seq DESC LIMIT ?",
                              [*params, limit])
        return tuple(codec.audit_from_row(r) for r in rows)

    def audit_counts_by_minute(self, *, since: datetime, after_seq: int = 0
                               ) -> tuple[tuple[AuditMinuteCount, ...], int]:
        """Per (minute, decision, method, forwarded) counts of the records after ``after_seq`` timed since
        ``since``, and the newest seq.

        A record counts its ``details.items`` (how many SVIDs one BatchNewX509SVID record stands
        for), else 1; ``forwarded`` is true for an agent's record the server appended. Callers keep
        the counts and ask again with the seq returned, so each record is counted once.
        """
        doc, fence, fields = _AUDIT_JSON[self._backend.dialect.name]
        with self._backend.transaction() as tx:
            head = max(after_seq, int(tx.execute("SELECT COALESCE(MAX(seq), 0) FROM audit")[0][0]))
            rows = tx.execute(f"SELECT minute, decision, method, forwarded, SUM(items) FROM (SELECT minute, decision,"
                              f" {fields} FROM (SELECT time / 60000000 AS minute, decision, {doc} AS doc FROM audit"
                              f" WHERE seq > ? AND seq <= ? AND +time >= ?{fence}) d) a"
                              " GROUP BY minute, decision, method, forwarded",
                              (after_seq, head, codec.to_micros(since)))
        return tuple(AuditMinuteCount(codec.from_micros(int(r[0]) * 60_000_000), str(r[1]), str(r[2] or ""),
                                      bool(r[3]), int(r[4])) for r in rows), head

    # -- label grants and approval decisions ----------------------------------------------------

    _GRANT_COLS = "entry_id, key, value, expires_at, granted_by"
    _DECISION_COLS = "entry_id, rule, decision, operator, decided_at, through_seq"

    @staticmethod
    def _grant(row: tuple[Any, ...]) -> LabelGrant:
        return LabelGrant(entry_id=row[0], key=row[1], value=row[2], expires_at=codec.from_micros(row[3]),
                          granted_by=row[4])

    def grant_label(self, grant: LabelGrant) -> None:
        """Store (or replace) the expiry of one entry label."""
        with self._backend.transaction() as tx:
            tx.execute("DELETE FROM label_grants WHERE entry_id = ? AND key = ?", (grant.entry_id, grant.key))
            _insert(tx, "label_grants", {"entry_id": grant.entry_id, "key": grant.key, "value": grant.value,
                                         "expires_at": codec.to_micros(grant.expires_at),
                                         "granted_by": grant.granted_by})

    def due_label_grants(self, *, now: datetime, limit: int = 1000) -> tuple[LabelGrant, ...]:
        """Grants that expired at or before ``now``, soonest first, at most ``limit``."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {self._GRANT_COLS} FROM label_grants WHERE expires_at <= ?"
                              " ORDER BY expires_at LIMIT ?", (codec.to_micros(now), limit))
        return tuple(self._grant(r) for r in rows)

    def delete_label_grant(self, entry_id: str, key: str) -> None:
        """Forget one grant (absent is fine)."""
        with self._backend.transaction() as tx:
            tx.execute("DELETE FROM label_grants WHERE entry_id = ? AND key = ?", (entry_id, key))

    def list_label_grants(self, *, limit: int = 1000) -> tuple[LabelGrant, ...]:
        """The grants in force, soonest expiry first, at most ``limit``."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {self._GRANT_COLS} FROM label_grants ORDER BY expires_at LIMIT ?", (limit,))
        return tuple(self._grant(r) for r in rows)

    def record_approval_decision(self, decision: ApprovalDecision) -> None:
        """Store (or replace) the decision for its (entry, rule)."""
        with self._backend.transaction() as tx:
            tx.execute("DELETE FROM approval_decisions WHERE entry_id = ? AND rule = ?",
                       (decision.entry_id, decision.rule))
            _insert(tx, "approval_decisions", {
                "entry_id": decision.entry_id, "rule": decision.rule, "decision": decision.decision,
                "operator": decision.operator, "decided_at": codec.to_micros(decision.decided_at),
                "through_seq": decision.through_seq})

    def list_approval_decisions(self, *, limit: int = 10_000) -> tuple[ApprovalDecision, ...]:
        """Decisions, newest first, at most ``limit``."""
        with self._backend.transaction() as tx:
            rows = tx.execute(f"SELECT {self._DECISION_COLS} FROM approval_decisions"
                              " ORDER BY decided_at DESC LIMIT ?", (limit,))
        return tuple(ApprovalDecision(entry_id=r[0], rule=r[1], decision=r[2], operator=r[3],
                                      decided_at=codec.from_micros(r[4]), through_seq=int(r[5])) for r in rows)
