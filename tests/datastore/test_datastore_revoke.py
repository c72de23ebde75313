"""SqlDataStore.revoke: revocations, eviction/deletion and the audit record in one transaction (both backends)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import pytest

from spiffe_server.datastore import (
    AuditCheckpoint,
    AuditRecord,
    ConflictError,
    Issuance,
    LimitExceededError,
    NotFoundError,
    Revocation,
    RevocationKind,
    RevocationRequest,
    SqlDataStore,
)
from tests.datastore.helpers import AGENT_ID, LATER, NOW, make_agent, make_entry


def _issued(n: int, *, entry_id: str = "", agent_id: str = AGENT_ID, prefix: str = "a",
            expires_at: datetime = LATER) -> list[Issuance]:
    return [Issuance(kind=RevocationKind.SERIAL, value=f"{prefix}{i:x}", spiffe_id="spiffe://example.org/w",
                     expires_at=expires_at, entry_id=entry_id, agent_id=agent_id) for i in range(n)]


def _record(prev: str, n: int = 1) -> list[AuditRecord]:
    out, last = [], prev
    for i in range(n):
        out.append(AuditRecord(time=NOW, record='{"m":"Revoke"}', prev_hash=last, hash=f"{last}h{i}"))
        last = out[-1].hash
    return out


SealAt = Callable[[int, str], tuple[list[AuditRecord], list[AuditCheckpoint]]]


def _seal(prev: str = "") -> tuple[list[Sequence[Revocation]], Callable[[Sequence[Revocation]], SealAt]]:
    """A sealer chaining after ``prev`` whatever head the store reports (so a wrong ``prev`` conflicts)."""
    seen: list[Sequence[Revocation]] = []

    def seal(revs: Sequence[Revocation]) -> SealAt:
        seen.append(revs)
        return lambda seq, newest: (_record(prev), [])
    return seen, seal


def test_revoke_agent_evicts_revokes_every_svid_and_appends_the_record(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    store.record_issuances(_issued(1200))  # more than one INSERT chunk
    seen, seal = _seal()
    result = store.revoke(RevocationRequest(reason="lost", now=NOW, agent_id=AGENT_ID, evict_agent=True),
                          seal)
    assert len(result.added) == len(result.revoked) == 1200 and len(seen[0]) == 1200
    assert store.count_revocations() == 1200 and store.count_agents() == 0
    assert [r.seq for r in result.audit] == [1] and [r.seq for r in store.iter_audit()] == [1]
    again = store.revoke(RevocationRequest(reason="x", now=NOW, items=tuple(_issued(2))), _seal("h0")[1])
    assert again.added == () and len(again.revoked) == 2  # already revoked: covered, not new


def test_revoke_writes_nothing_when_the_audit_chain_moved(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    store.record_issuances(_issued(600))
    seq = store.change_seq()
    with pytest.raises(ConflictError):
        store.revoke(RevocationRequest(reason="lost", now=NOW, agent_id=AGENT_ID, evict_agent=True),
                     _seal("not-the-newest-hash")[1])
    assert store.count_revocations() == 0 and store.count_agents() == 1 and store.change_seq() == seq
    assert list(store.iter_audit()) == []


def test_revoke_entry_delete_is_all_or_nothing(store: SqlDataStore) -> None:
    entry = store.create_entry(make_entry())
    store.record_issuances(_issued(700, entry_id=entry.id))
    with pytest.raises(NotFoundError):
        store.revoke(RevocationRequest(reason="r", now=NOW, entry_id="nope", delete_entry=True),
                     _seal()[1])
    with pytest.raises(ConflictError):
        store.revoke(RevocationRequest(reason="r", now=NOW, entry_id=entry.id, delete_entry=True),
                     _seal("bad")[1])
    assert store.count_revocations() == 0 and store.count_entries() == 1
    result = store.revoke(RevocationRequest(reason="r", now=NOW, entry_id=entry.id, delete_entry=True),
                          _seal()[1])
    assert len(result.added) == 700 and store.count_entries() == 0


def test_agent_share_refuses_agent_requests_but_never_admin_ones(store: SqlDataStore) -> None:
    items = _issued(5)
    store.record_issuances(items)
    limited = RevocationRequest(reason="own", now=NOW, items=tuple(items[:3]), limit=3)
    store.revoke(limited, _seal()[1])
    with pytest.raises(LimitExceededError, match="reserved for admins"):
        store.revoke(RevocationRequest(reason="own", now=NOW, items=(items[3],), limit=3),
                     _seal("h0")[1])
    assert store.count_revocations() == 3  # rolled back, audit record too
    admin = store.revoke(RevocationRequest(reason="admin", now=NOW, items=tuple(items[3:])),
                         _seal("h0")[1])
    assert len(admin.added) == 2 and store.count_revocations() == 5


def test_agent_quota_counts_only_that_agents_unexpired_revocations(store: SqlDataStore) -> None:
    mine, other = _issued(3), _issued(3, agent_id="spiffe://example.org/spire/agent/other", prefix="b")
    soon = _issued(2, prefix="c", expires_at=NOW + timedelta(seconds=1))
    store.record_issuances([*mine, *other, *soon])
    store.revoke(RevocationRequest(reason="x", now=NOW, items=(*other, *soon)), _seal()[1])
    later = NOW + timedelta(seconds=2)  # the two "soon" revocations have expired: they count for nothing
    store.revoke(RevocationRequest(reason="own", now=later, items=tuple(mine[:2]), limit=6, quota_agent=AGENT_ID,
                                   agent_quota=2),
                 _seal("h0")[1])
    with pytest.raises(LimitExceededError, match="quota"):
        store.revoke(RevocationRequest(reason="own", now=later, items=(mine[2],), quota_agent=AGENT_ID,
                                       agent_quota=2),
                     _seal("h0h0")[1])
    assert store.prune_revocations(now=later) == 2 and store.count_revocations() == 5
