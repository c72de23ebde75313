"""The issuance log and batch revocations (issue 5), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spiffe_server.datastore import (
    AuditRecord,
    ConflictError,
    Issuance,
    NotFoundError,
    Revocation,
    RevocationKind,
    SqlDataStore,
)

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _issued(i: int, *, entry: str = "e1", agent: str = "a1", minutes: int = 10) -> Issuance:
    return Issuance(kind=RevocationKind.SERIAL, value=f"{i:x}", spiffe_id="spiffe://example.org/w", entry_id=entry,
                    agent_id=agent, issuer="ab" * 20, expires_at=NOW + timedelta(minutes=minutes))


def test_issuance_log_batches_lookups_and_prunes(store: SqlDataStore) -> None:
    batch = [_issued(i + 1) for i in range(1200)]  # more than one INSERT chunk
    store.record_issuances(batch)
    store.record_issuances(batch[:3])  # a replayed batch is ignored
    store.record_issuances([_issued(5000, entry="e2", agent="a2", minutes=1)])
    assert store.get_issuance(RevocationKind.SERIAL, "1") == batch[0]
    with pytest.raises(NotFoundError, match="no issued serial 'ffff'"):
        store.get_issuance(RevocationKind.SERIAL, "ffff")
    assert len(store.list_issuances(now=NOW, entry_id="e1")) == 1200
    assert [i.value for i in store.list_issuances(now=NOW, agent_id="a2")] == [f"{5000:x}"]
    assert store.list_issuances(now=NOW + timedelta(minutes=2), agent_id="a2") == ()
    with pytest.raises(ValueError, match="exactly one of entry_id and agent_id"):
        store.list_issuances(now=NOW)
    assert store.prune_issuances(now=NOW + timedelta(minutes=2)) == 1
    assert store.prune_issuances(now=NOW + timedelta(minutes=10)) == 1200


def test_add_revocations_returns_only_new_ones_and_records_one_change(store: SqlDataStore) -> None:
    revs = tuple(Revocation(kind=RevocationKind.JTI, value=f"j{i}", revoked_at=NOW,
                            expires_at=NOW + timedelta(minutes=5), spiffe_id="spiffe://example.org/w", issuer="")
                 for i in range(3))
    seq, rseq = store.change_seq(), store.revocation_seq()
    assert store.add_revocations(revs[:2]) == revs[:2]
    assert store.add_revocations(revs) == revs[2:]
    assert store.add_revocations(revs) == () and store.add_revocations(()) == ()
    assert store.change_seq() == seq + 2 and store.revocation_seq() == rseq + 2
    assert store.list_revocations(now=NOW) == revs


def test_audit_batch_and_issuances_are_written_in_one_transaction(store: SqlDataStore) -> None:
    """A batch's audit records and issuance log land together, or (chain conflict) not at all."""
    first = AuditRecord(time=NOW, record='{"n":1}', prev_hash="", hash="h1")
    second = AuditRecord(time=NOW, record='{"n":2}', prev_hash="h1", hash="h2")
    stored = store.append_audit_batch([first, second], [_issued(1), _issued(2)])
    assert [(r.seq, r.hash) for r in stored] == [(1, "h1"), (2, "h2")]
    assert {i.value for i in store.list_issuances(now=NOW, entry_id="e1")} == {"1", "2"}
    stale = AuditRecord(time=NOW, record='{"n":3}', prev_hash="h1", hash="h3")
    with pytest.raises(ConflictError):
        store.append_audit_batch([stale], [_issued(3)])
    assert {i.value for i in store.list_issuances(now=NOW, entry_id="e1")} == {"1", "2"}  # rolled back
    broken = AuditRecord(time=NOW, record='{"n":4}', prev_hash="h9", hash="h4")
    with pytest.raises(ConflictError):
        store.append_audit_batch([AuditRecord(time=NOW, record='{"n":3}', prev_hash="h2", hash="h3"), broken])
    assert [r.seq for r in store.iter_audit()] == [1, 2]  # the whole batch or nothing
