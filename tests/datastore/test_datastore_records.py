"""Bundles, the CA journal, revocations and the audit chain, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from grpclib.const import Status

from spiffe_server.api.errors import status_for
from spiffe_server.datastore import (
    AuditCheckpoint,
    AuditFilter,
    AuditRecord,
    BundleRecord,
    ConflictError,
    InvalidArgumentError,
    LimitExceededError,
    NotFoundError,
    Page,
    Revocation,
    RevocationKind,
    SqlDataStore,
)
from spiffe_server.datastore.models import MAX_JOURNAL_BYTES
from tests.datastore.conftest import StoreFactory
from tests.datastore.helpers import LATER, NOW, TD


def test_bundles_set_get_replace_list_delete(store: SqlDataStore) -> None:
    with pytest.raises(NotFoundError, match=r"'example\.org'"):
        store.get_bundle("example.org")
    store.set_bundle(BundleRecord(trust_domain="example.org", data=b'{"keys":[]}', sequence=1))
    store.set_bundle(BundleRecord(trust_domain="b.org", data=b"\x00binary-ok", sequence=5))
    store.set_bundle(BundleRecord(trust_domain="example.org", data=b'{"keys":[1]}', sequence=2))
    assert store.get_bundle("example.org") == BundleRecord(trust_domain="example.org", data=b'{"keys":[1]}',
                                                           sequence=2)
    assert [b.trust_domain for b in store.list_bundles()] == ["b.org", "example.org"]
    assert store.get_bundle("b.org").data == b"\x00binary-ok"
    store.delete_bundle("b.org")
    with pytest.raises(NotFoundError):
        store.delete_bundle("b.org")
    assert [b.trust_domain for b in store.list_bundles()] == ["example.org"]


def test_ca_journal_load_save_replace(store: SqlDataStore) -> None:
    assert store.load_journal() is None
    store.save_journal(b"journal-v1")
    store.save_journal(b"journal-v2\x00\xff")
    assert store.load_journal() == b"journal-v2\x00\xff"
    with pytest.raises(InvalidArgumentError) as info:
        store.save_journal(b"x" * (MAX_JOURNAL_BYTES + 1))
    assert info.value.field == "journal"
    assert store.load_journal() == b"journal-v2\x00\xff"


def _revocation(value: str, expires_at: object = LATER, kind: RevocationKind = RevocationKind.SERIAL) -> Revocation:
    return Revocation(kind=kind, value=value, revoked_at=NOW, expires_at=expires_at,  # type: ignore[arg-type]
                      entry_id="e1", agent_id=f"{TD}/agent", reason="key compromise")


def test_revocations_list_unexpired_and_prune(store: SqlDataStore) -> None:
    store.add_revocation(_revocation("01", expires_at=NOW + timedelta(seconds=1)))
    store.add_revocation(_revocation("02"))
    store.add_revocation(_revocation("02"))  # idempotent
    store.add_revocation(_revocation("jti-1", kind=RevocationKind.JTI))
    assert store.count_revocations() == 3
    later = NOW + timedelta(seconds=1)
    assert [(r.kind, r.value) for r in store.list_revocations(now=later)] == [
        (RevocationKind.JTI, "jti-1"), (RevocationKind.SERIAL, "02")]
    assert store.list_revocations(now=NOW)[1] == _revocation("01", expires_at=later)
    assert store.prune_revocations(now=later) == 1
    assert store.count_revocations() == 2


def test_revocations_are_bounded(backend: StoreFactory) -> None:
    store = backend.open(max_revocations=2)
    store.add_revocation(_revocation("01", expires_at=NOW))
    store.add_revocation(_revocation("02"))
    with pytest.raises(LimitExceededError) as info:
        store.add_revocation(_revocation("03"))
    assert status_for(info.value) is Status.RESOURCE_EXHAUSTED
    assert store.prune_revocations(now=NOW) == 1
    store.add_revocation(_revocation("03"))
    assert store.count_revocations() == 2


def _audit(n: int, prev: str, *, spiffe_id: str = "", decision: str = "") -> AuditRecord:
    return AuditRecord(time=NOW + timedelta(seconds=n), record=f'{{"n":{n}}}', prev_hash=prev, hash=f"h{n}",
                       spiffe_id=spiffe_id, decision=decision)


def test_audit_chain_append_checks_prev_hash(store: SqlDataStore) -> None:
    first = store.append_audit(_audit(1, ""))
    assert first.seq == 1
    assert store.append_audit(_audit(2, "h1")).seq == 2
    with pytest.raises(ConflictError, match="'h1'") as info:
        store.append_audit(_audit(3, "h1"))
    assert status_for(info.value) is Status.ABORTED
    with pytest.raises(ConflictError):
        store.append_audit(_audit(3, ""))
    assert store.append_audit(_audit(3, "h2")).seq == 3  # a rejected append consumed no sequence number
    assert [(r.seq, r.prev_hash, r.hash) for r in store.iter_audit()] == [(1, "", "h1"), (2, "h1", "h2"),
                                                                          (3, "h2", "h3")]


def test_audit_concurrent_appends_on_one_head_one_wins(backend: StoreFactory) -> None:
    one, two = backend.open(), backend.open()
    one.append_audit(_audit(1, ""))
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def append(store: SqlDataStore, n: int) -> None:
        barrier.wait()
        try:
            store.append_audit(_audit(n, "h1"))
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=append, args=(s, n)) for s, n in ((one, 2), (two, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "ok"]
    assert [r.prev_hash for r in one.iter_audit()] == ["", "h1"]


def test_sealed_appends_from_two_stores_in_threads_all_land_in_one_chain(backend: StoreFactory) -> None:
    """The seal callback sees the locked head, so concurrent appenders never conflict and never retry."""
    stores = [backend.open(), backend.open()]
    seen: list[tuple[int, str]] = []

    def seal(seq: int, newest: str) -> tuple[list[AuditRecord], list[AuditCheckpoint]]:
        seen.append((seq, newest))
        checkpoints = [AuditCheckpoint(seq=seq + 1, hash=f"h{seq + 1}", time=NOW, signature="sig")]
        return [_audit(seq + 1, newest)], checkpoints if (seq + 1) % 10 == 0 else []

    def run(store: SqlDataStore) -> None:
        for _ in range(20):
            store.append_audit_sealed(seal)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = list(stores[0].iter_audit())
    assert [(r.seq, r.prev_hash, r.hash) for r in rows] == [(n, f"h{n - 1}" if n > 1 else "", f"h{n}")
                                                            for n in range(1, 41)]
    assert sorted(seen) == [(n, f"h{n}" if n else "") for n in range(40)]
    assert [cp.seq for cp in stores[1].iter_audit_checkpoints()] == [10, 20, 30, 40]
    latest = stores[1].latest_audit_checkpoint()
    assert latest is not None and (latest.seq, latest.hash, latest.time, latest.signature) == (40, "h40", NOW, "sig")
    stores[0].add_audit_checkpoint(AuditCheckpoint(seq=40, hash="other", time=NOW, signature="x"))  # kept as it was
    assert stores[0].latest_audit_checkpoint() == latest


def test_audit_listing_filters_and_paging(store: SqlDataStore) -> None:
    prev = ""
    for n in range(1, 8):
        store.append_audit(_audit(n, prev, spiffe_id=f"{TD}/{'admin' if n % 2 else 'agent'}",
                                  decision="deny" if n in (3, 4) else "allow"))
        prev = f"h{n}"
    assert [r.seq for r in store.list_audit(AuditFilter(decision="deny")).items] == [3, 4]
    assert [r.seq for r in store.list_audit(AuditFilter(spiffe_id=f"{TD}/agent")).items] == [2, 4, 6]
    since = AuditFilter(since=NOW + timedelta(seconds=5), spiffe_id=f"{TD}/admin")
    assert [r.seq for r in store.list_audit(since).items] == [5, 7]
    first = store.list_audit(page=Page(size=4))
    rest = store.list_audit(page=Page(first.next_token, 4))
    assert [r.seq for r in first.items + rest.items] == list(range(1, 8)) and rest.next_token == ""
    with pytest.raises(InvalidArgumentError) as info:
        store.list_audit(page=Page("not-a-number"))
    assert info.value.field == "page_token"
