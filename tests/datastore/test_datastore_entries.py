"""Registration entries and the change log, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from grpclib.const import Status

from spiffe_server.api.errors import status_for
from spiffe_server.datastore import (
    AlreadyExistsError,
    BundleRecord,
    ChangeKind,
    EntryFilter,
    InvalidArgumentError,
    MatchMode,
    NotFoundError,
    Page,
    RegistrationEntry,
    SelectorMatch,
    SqlDataStore,
)
from tests.datastore.conftest import StoreFactory
from tests.datastore.helpers import AGENT_ID, LATER, NOW, TD, make_agent, make_entry, sel


def test_create_and_get_round_trip_every_field(store: SqlDataStore) -> None:
    entry = make_entry(
        id="entry-1", x509_svid_ttl=3600, jwt_svid_ttl=300, dns_names=("b.example", "a.example"), hint="web",
        admin=True, downstream=True, federates_with=("spiffe://b.org", "spiffe://a.org"),
        expires_at=LATER + timedelta(microseconds=7), labels={"team": "x", "env": "prod"}, bind_to_process=True,
        max_lifetime=86400, jwt_claims={"aud_extra": "1"}, quarantined=True,
        selectors=sel("unix:uid:1000", "docker:label:app:web"),
    )
    created = store.create_entry(entry)
    assert created == entry
    got = store.get_entry("entry-1")
    assert got == entry
    assert got.dns_names == ("b.example", "a.example")  # order kept: the first DNS name becomes the CN
    assert got.selectors == sel("docker:label:app:web", "unix:uid:1000")  # sorted
    assert got.created_at.tzinfo is not None and got.expires_at == LATER + timedelta(microseconds=7)


def test_create_generates_id_and_starts_at_revision_zero(store: SqlDataStore) -> None:
    created = store.create_entry(make_entry(revision=9))
    assert len(created.id) == 36 and created.revision == 0
    assert store.get_entry(created.id).revision == 0


def test_create_rejects_same_parent_spiffe_id_and_selector_set(store: SqlDataStore) -> None:
    first = store.create_entry(make_entry(selectors=sel("unix:uid:1", "unix:gid:2")))
    with pytest.raises(AlreadyExistsError, match=first.id) as info:
        store.create_entry(make_entry(selectors=sel("unix:gid:2", "unix:uid:1")))  # same set, other order
    assert status_for(info.value) is Status.ALREADY_EXISTS
    # Any difference in the triple makes a distinct entry.
    store.create_entry(make_entry(selectors=sel("unix:uid:1")))
    store.create_entry(make_entry(selectors=sel("unix:uid:1", "unix:gid:2"), spiffe_id=f"{TD}/other"))
    store.create_entry(make_entry(selectors=sel("unix:uid:1", "unix:gid:2"), parent_id=f"{TD}/other-agent"))
    assert store.count_entries() == 4


def test_create_rejects_duplicate_id(store: SqlDataStore) -> None:
    store.create_entry(make_entry(id="same"))
    with pytest.raises(AlreadyExistsError, match="'same'"):
        store.create_entry(make_entry(id="same", spiffe_id=f"{TD}/else"))
    assert store.get_entry("same").spiffe_id == f"{TD}/web"


def test_update_bumps_revision_and_keeps_created_at(store: SqlDataStore) -> None:
    created = store.create_entry(make_entry(labels={"a": "1"}))
    updated = store.update_entry(replace(created, hint="new", labels={"b": "2"}, selectors=sel("unix:uid:2"),
                                         created_at=LATER, revision=100))
    assert (updated.revision, updated.created_at, updated.hint) == (1, NOW, "new")
    assert store.get_entry(created.id) == updated
    assert store.update_entry(updated).revision == 2
    # Side tables follow the update: old label/selector no longer match, new ones do.
    assert store.count_entries(EntryFilter(labels={"a": "1"})) == 0
    assert store.count_entries(EntryFilter(labels={"b": "2"})) == 1
    assert store.count_entries(EntryFilter(by_selectors=SelectorMatch(selectors=sel("unix:uid:1000")))) == 0


def test_update_into_a_duplicate_is_rejected_and_rolled_back(store: SqlDataStore) -> None:
    store.create_entry(make_entry(selectors=sel("unix:uid:1")))
    other = store.create_entry(make_entry(selectors=sel("unix:uid:2")))
    with pytest.raises(AlreadyExistsError):
        store.update_entry(replace(other, selectors=sel("unix:uid:1")))
    assert store.get_entry(other.id) == other  # the delete-then-insert was rolled back


def test_update_and_delete_of_missing_entry_raise_not_found(store: SqlDataStore) -> None:
    with pytest.raises(NotFoundError, match="'nope'") as info:
        store.update_entry(make_entry(id="nope"))
    assert status_for(info.value) is Status.NOT_FOUND
    with pytest.raises(NotFoundError):
        store.delete_entry("nope")


def test_delete_returns_entry_and_then_it_is_gone(store: SqlDataStore) -> None:
    created = store.create_entry(make_entry(labels={"k": "v"}))
    assert store.delete_entry(created.id) == created
    with pytest.raises(NotFoundError):
        store.get_entry(created.id)
    assert store.count_entries(EntryFilter(labels={"k": "v"})) == 0
    # The identity triple is free again.
    store.create_entry(make_entry())


@pytest.fixture
def filtered(store: SqlDataStore) -> dict[str, RegistrationEntry]:
    """Entries with selector sets {a}, {a,b}, {b,c}, {c} and assorted other attributes."""
    specs: dict[str, dict[str, Any]] = {
        "a": {"selectors": sel("t:a"), "hint": "h1", "labels": {"env": "prod"}},
        "ab": {"selectors": sel("t:a", "t:b"), "spiffe_id": f"{TD}/ab", "labels": {"env": "prod", "team": "x"}},
        "bc": {"selectors": sel("t:b", "t:c"), "parent_id": f"{TD}/other-agent", "hint": "h1"},
        "c": {"selectors": sel("t:c"), "labels": {"env": "dev"}},
    }
    return {name: store.create_entry(make_entry(id=name, **fields)) for name, fields in specs.items()}


def _ids(store: SqlDataStore, flt: EntryFilter) -> list[str]:
    items = store.list_entries(flt).items
    assert store.count_entries(flt) == len(items)
    return [e.id for e in items]


@pytest.mark.parametrize(
    ("mode", "selectors", "expected"),
    [
        (MatchMode.EXACT, ("t:a", "t:b"), ["ab"]),
        (MatchMode.EXACT, ("t:b",), []),
        (MatchMode.SUBSET, ("t:a", "t:b"), ["a", "ab"]),  # what a workload with {a, b} is entitled to
        (MatchMode.SUBSET, ("t:c", "t:x"), ["c"]),
        (MatchMode.SUPERSET, ("t:b",), ["ab", "bc"]),
        (MatchMode.SUPERSET, ("t:a", "t:b"), ["ab"]),
        (MatchMode.ANY, ("t:a", "t:c"), ["a", "ab", "bc", "c"]),
        (MatchMode.ANY, ("t:x",), []),
    ],
)
def test_selector_filter_modes(store: SqlDataStore, filtered: dict[str, RegistrationEntry], mode: MatchMode,
                               selectors: tuple[str, ...], expected: list[str]) -> None:
    assert _ids(store, EntryFilter(by_selectors=SelectorMatch(selectors=sel(*selectors), mode=mode))) == expected


def test_attribute_filters_combine_with_and(store: SqlDataStore, filtered: dict[str, RegistrationEntry]) -> None:
    assert _ids(store, EntryFilter(by_spiffe_id=f"{TD}/ab")) == ["ab"]
    assert _ids(store, EntryFilter(by_parent_id=f"{TD}/other-agent")) == ["bc"]
    assert _ids(store, EntryFilter(by_hint="h1")) == ["a", "bc"]
    assert _ids(store, EntryFilter(labels={"env": "prod"})) == ["a", "ab"]
    assert _ids(store, EntryFilter(labels={"env": "prod", "team": "x"})) == ["ab"]
    assert _ids(store, EntryFilter(label_keys=("team",))) == ["ab"]  # the key, whatever its value
    assert _ids(store, EntryFilter(label_keys=("env",), labels={"team": "x"})) == ["ab"]
    assert _ids(store, EntryFilter(by_hint="h1", by_parent_id=AGENT_ID)) == ["a"]
    sub = SelectorMatch(selectors=sel("t:a", "t:b", "t:c"), mode=MatchMode.SUBSET)
    assert _ids(store, EntryFilter(by_selectors=sub, labels={"env": "prod"})) == ["a", "ab"]
    assert _ids(store, EntryFilter()) == ["a", "ab", "bc", "c"]


def test_paging_visits_every_entry_once(store: SqlDataStore) -> None:
    made = {store.create_entry(make_entry(spiffe_id=f"{TD}/w{i}")).id for i in range(23)}
    seen: list[str] = []
    page = Page(size=5)
    pages = 0
    while True:
        result = store.list_entries(page=page)
        pages += 1
        assert len(result.items) == (5 if result.next_token else 3)
        seen.extend(e.id for e in result.items)
        if not result.next_token:
            break
        page = Page(result.next_token, 5)
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23 and set(seen) == made
    assert seen == sorted(seen)


def test_paging_exact_multiple_has_no_empty_trailing_page(store: SqlDataStore) -> None:
    for i in range(4):
        store.create_entry(make_entry(spiffe_id=f"{TD}/w{i}"))
    first = store.list_entries(page=Page(size=2))
    second = store.list_entries(page=Page(first.next_token, 2))
    assert len(second.items) == 2 and second.next_token == ""


def test_paging_with_filter(store: SqlDataStore) -> None:
    for i in range(6):
        store.create_entry(make_entry(spiffe_id=f"{TD}/w{i}", hint="even" if i % 2 == 0 else "odd"))
    first = store.list_entries(EntryFilter(by_hint="even"), Page(size=2))
    rest = store.list_entries(EntryFilter(by_hint="even"), Page(first.next_token, 2))
    hints = {e.hint for e in first.items + rest.items}
    assert (len(first.items), len(rest.items), hints, rest.next_token) == (2, 1, {"even"}, "")


def test_list_by_parent_ids(store: SqlDataStore) -> None:
    store.create_entry(make_entry(id="e1"))
    store.create_entry(make_entry(id="e2", parent_id=f"{TD}/node-alias"))
    store.create_entry(make_entry(id="e3", parent_id=f"{TD}/unrelated"))
    assert [e.id for e in store.list_by_parent_ids([AGENT_ID, f"{TD}/node-alias", AGENT_ID])] == ["e1", "e2"]
    assert store.list_by_parent_ids([]) == ()
    with pytest.raises(InvalidArgumentError) as info:
        store.list_by_parent_ids(f"{TD}/{i}" for i in range(1001))
    assert info.value.field == "parent_ids"


def test_prune_entries_removes_only_expired(store: SqlDataStore) -> None:
    store.create_entry(make_entry(id="old", expires_at=NOW - timedelta(seconds=1), spiffe_id=f"{TD}/old"))
    store.create_entry(make_entry(id="new", expires_at=LATER, spiffe_id=f"{TD}/new"))
    store.create_entry(make_entry(id="forever", spiffe_id=f"{TD}/forever"))
    assert store.prune_entries(now=NOW) == 1
    assert [e.id for e in store.list_entries().items] == ["forever", "new"]
    assert store.changes_since(0).changes[-1].key == "old" and store.changes_since(0).changes[-1].deleted


def test_change_log_orders_entry_agent_bundle_changes(store: SqlDataStore) -> None:
    assert store.change_seq() == 0
    entry = store.create_entry(make_entry())
    store.update_entry(entry)
    store.create_agent(make_agent())
    store.set_bundle(BundleRecord(trust_domain="example.org", data=b"{}"))
    store.delete_entry(entry.id)
    batch = store.changes_since(0)
    assert [(c.seq, c.kind, c.key, c.deleted) for c in batch.changes] == [
        (1, ChangeKind.ENTRY, entry.id, False),
        (2, ChangeKind.ENTRY, entry.id, False),
        (3, ChangeKind.AGENT, AGENT_ID, False),
        (4, ChangeKind.BUNDLE, "example.org", False),
        (5, ChangeKind.ENTRY, entry.id, True),
    ]
    assert store.change_seq() == 5
    assert [c.seq for c in store.changes_since(3).changes] == [4, 5]
    assert [c.seq for c in store.changes_since(0, limit=2).changes] == [1, 2]
    assert not batch.history_truncated


def test_failed_write_leaves_no_change_behind(store: SqlDataStore) -> None:
    store.create_entry(make_entry())
    with pytest.raises(AlreadyExistsError):
        store.create_entry(make_entry())
    assert store.change_seq() == 1


def test_pruned_change_history_is_reported(store: SqlDataStore) -> None:
    for i in range(5):
        store.create_entry(make_entry(spiffe_id=f"{TD}/w{i}"))
    assert store.prune_changes(keep_last=2) == 3
    assert store.changes_since(1).history_truncated  # seqs 2 and 3 are gone: reload everything
    batch = store.changes_since(3)
    assert not batch.history_truncated and [c.seq for c in batch.changes] == [4, 5]
    assert store.prune_changes(keep_last=10) == 0
    assert store.changes_since(1).history_truncated  # the pruned mark never moves back


def test_second_server_sees_changes_of_the_first(backend: StoreFactory) -> None:
    one, two = backend.open(), backend.open()
    seen = two.change_seq()
    entry = one.create_entry(make_entry())
    changes = two.changes_since(seen).changes
    assert [(c.kind, c.key) for c in changes] == [(ChangeKind.ENTRY, entry.id)]
    assert two.get_entry(entry.id) == entry


def test_concurrent_writers_on_two_servers_do_not_deadlock(backend: StoreFactory) -> None:
    """Updaters on two stores race a pruner over the same rows in opposite orders; change numbers stay gapless."""
    stores = [backend.open(), backend.open()]
    doomed = [f"p{i:02}" for i in range(30)]
    for entry_id in doomed:
        stores[0].create_entry(make_entry(id=entry_id, spiffe_id=f"{TD}/{entry_id}", expires_at=NOW))
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def collect(work: Callable[[], object]) -> None:
        barrier.wait()
        try:
            work()
        except BaseException as err:  # collected: a thread's exception would otherwise be lost
            errors.append(err)

    def updater(store: SqlDataStore, name: str) -> None:
        for entry_id in reversed(doomed):
            with contextlib.suppress(NotFoundError):
                store.update_entry(replace(store.get_entry(entry_id), hint=name))
        for i in range(4):
            store.create_entry(make_entry(spiffe_id=f"{TD}/{name}/{i}"))

    threads = [threading.Thread(target=collect, args=(partial(updater, stores[n % 2], f"w{n}"),)) for n in range(4)]
    threads.append(threading.Thread(target=collect, args=(partial(stores[1].prune_entries, now=LATER),)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = [c.seq for c in stores[1].changes_since(0).changes]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] == stores[0].change_seq()
    assert stores[0].count_entries() == 16


def test_get_entries_by_ids(store: SqlDataStore) -> None:
    store.create_entry(make_entry(id="e1"))
    store.create_entry(make_entry(id="e2", spiffe_id=f"{TD}/w2", selectors=sel("unix:uid:2")))
    got = store.get_entries(["e2", "missing", "e1", "e2"])
    assert sorted(got) == ["e1", "e2"] and got["e2"].spiffe_id == f"{TD}/w2"
    assert got["e2"].selectors == sel("unix:uid:2")
    assert store.get_entries([]) == {}
    with pytest.raises(InvalidArgumentError) as info:
        store.get_entries(f"e{i}" for i in range(1001))
    assert info.value.field == "entry_ids"
