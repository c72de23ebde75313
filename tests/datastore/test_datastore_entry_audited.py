"""Entry writes with their audit record in one transaction (both backends): no change without its record."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from spiffe_server.datastore import (
    AlreadyExistsError,
    AuditCheckpoint,
    AuditRecord,
    ConflictError,
    NotFoundError,
    RegistrationEntry,
    SqlDataStore,
)
from tests.datastore.helpers import NOW, make_entry

SealAt = Callable[[int, str], tuple[list[AuditRecord], list[AuditCheckpoint]]]


def _seal(prev: str = "", seen: list[RegistrationEntry] | None = None) -> Callable[[RegistrationEntry], SealAt]:
    """A sealer whose record chains after ``prev`` (a stale ``prev`` conflicts), noting the entry it was given."""

    def seal(entry: RegistrationEntry) -> SealAt:
        if seen is not None:
            seen.append(entry)
        return lambda seq, newest: ([AuditRecord(time=NOW, record=f'{{"entry_id":"{entry.id}"}}', prev_hash=prev,
                                                 hash=f"{prev}h")], [])
    return seal


def test_create_update_delete_each_store_their_record_and_give_it_the_written_entry(store: SqlDataStore) -> None:
    seen: list[RegistrationEntry] = []
    created = store.create_entry_audited(make_entry(), _seal("", seen))
    assert created.entry.id and seen == [created.entry]  # the record is built from the entry as stored (its new id)
    assert [r.seq for r in created.audit] == [1] and created.audit[0].record == f'{{"entry_id":"{created.entry.id}"}}'
    updated = store.update_entry_audited(replace(created.entry, hint="x"), _seal("h", seen))
    assert updated.entry.revision == 1 and seen[-1] == updated.entry and [r.seq for r in updated.audit] == [2]
    deleted = store.delete_entry_audited(created.entry.id, _seal("hh", seen))
    assert deleted.entry.id == created.entry.id and [r.seq for r in deleted.audit] == [3]
    assert [r.seq for r in store.iter_audit()] == [1, 2, 3] and store.count_entries() == 0


def test_a_failed_audit_append_rolls_the_entry_change_back(store: SqlDataStore) -> None:
    seq = store.change_seq()
    with pytest.raises(ConflictError):  # the chain moved: the record cannot be sealed, so the entry is not stored
        store.create_entry_audited(make_entry(), _seal("not-the-newest-hash"))
    assert store.count_entries() == 0 and store.change_seq() == seq and list(store.iter_audit()) == []
    kept = store.create_entry(make_entry())
    with pytest.raises(ConflictError):
        store.update_entry_audited(replace(kept, hint="lost"), _seal("stale"))
    with pytest.raises(ConflictError):
        store.delete_entry_audited(kept.id, _seal("stale"))
    assert store.get_entry(kept.id) == kept and list(store.iter_audit()) == []


def test_a_refused_entry_write_stores_no_record(store: SqlDataStore) -> None:
    kept = store.create_entry(make_entry())
    with pytest.raises(AlreadyExistsError):
        store.create_entry_audited(replace(kept, id=""), _seal())
    with pytest.raises(NotFoundError):
        store.delete_entry_audited("no-such-entry", _seal())
    assert list(store.iter_audit()) == [] and store.count_entries() == 1
