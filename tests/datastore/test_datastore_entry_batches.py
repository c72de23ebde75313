"""Entry batches: one transaction each, a failing entry stands alone (SQLite and PostgreSQL)."""

from __future__ import annotations

from spiffe_server.datastore import EntryFilter, Page
from spiffe_server.datastore._store import SqlDataStore
from spiffe_server.datastore.errors import AlreadyExistsError, NotFoundError
from tests.datastore.helpers import TD, make_entry, sel


def test_create_entries_stores_all_but_the_duplicates(store: SqlDataStore) -> None:
    existing = store.create_entry(make_entry(spiffe_id=f"{TD}/old"))
    before = store.change_seq()
    out = store.create_entries([
        make_entry(spiffe_id=f"{TD}/a", labels={"k": "v"}, selectors=sel("unix:uid:1", "unix:gid:2")),
        make_entry(spiffe_id=f"{TD}/old"),                      # like a stored entry
        make_entry(spiffe_id=f"{TD}/b"),
        make_entry(spiffe_id=f"{TD}/b"),                        # like an earlier one in the batch
        make_entry(id=existing.id, spiffe_id=f"{TD}/c"),        # a taken id
    ])
    assert [type(o).__name__ for o in out] == ["RegistrationEntry", "AlreadyExistsError", "RegistrationEntry",
                                               "AlreadyExistsError", "AlreadyExistsError"]
    assert existing.id in str(out[1])
    a, b = out[0], out[2]
    assert not isinstance(a, Exception) and not isinstance(b, Exception)
    assert store.get_entry(a.id) == a and store.get_entry(b.id) == b
    assert store.count_entries() == 3
    assert store.count_entries(EntryFilter(by_spiffe_id=f"{TD}/a")) == 1
    assert [c.key for c in store.changes_since(before).changes] == [a.id, b.id]
    assert store.change_seq() == before + 2
    assert len(store.list_entries(None, Page(size=10)).items) == 3


def test_update_and_delete_entries_fail_per_entry(store: SqlDataStore) -> None:
    a, b = (store.create_entry(make_entry(spiffe_id=f"{TD}/{n}")) for n in "ab")
    out = store.update_entries([make_entry(id=a.id, spiffe_id=f"{TD}/a2"), make_entry(id="gone"),
                                make_entry(id=b.id, spiffe_id=f"{TD}/a2")])  # now like the first
    assert isinstance(out[1], NotFoundError) and isinstance(out[2], AlreadyExistsError)
    assert store.get_entry(a.id).spiffe_id == f"{TD}/a2" and store.get_entry(a.id).revision == 1
    assert store.get_entry(b.id) == b  # its failed update was rolled back alone
    out = store.delete_entries([a.id, "gone", b.id])
    assert isinstance(out[1], NotFoundError)
    assert store.count_entries() == 0
