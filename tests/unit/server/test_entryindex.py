"""The in-memory entry index and agent views: always equal to a full authorization over all entries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from spiffe_py.selectors import Selector
from spiffe_server.api.entryfeed import ChangeNotifier, EntryFeed
from spiffe_server.authz import authorized_entries
from spiffe_server.datastore import RegistrationEntry, open_datastore
from spiffe_server.entryindex import EntryIndex, advance

TD = "spiffe://example.org"
SERVER = f"{TD}/spire/server"
AGENT = f"{TD}/agent/a"
OTHER = f"{TD}/agent/b"
NODE_SELECTORS = (Selector("node", "x"),)
T0 = datetime(2026, 1, 1, tzinfo=UTC)
IDS = [AGENT, OTHER, SERVER, f"{TD}/alias", f"{TD}/w1", f"{TD}/w2", f"{TD}/w3"]


def _entry(eid: str, parent: str, spiffe: str, *, sel: str = "u", rev: int = 0,
           federates: tuple[str, ...] = ()) -> RegistrationEntry:
    return RegistrationEntry(id=eid, spiffe_id=spiffe, parent_id=parent, selectors=(Selector("node", sel),),
                             created_at=T0, revision=rev, federates_with=federates)


def _expected(index: EntryIndex, agent: str = AGENT) -> dict[str, RegistrationEntry]:
    return authorized_entries(agent, NODE_SELECTORS, list(index.entries.values()), server_id=SERVER)


ops = st.lists(st.tuples(st.sampled_from([f"e{i}" for i in range(8)]), st.booleans(),
                         st.sampled_from(IDS), st.sampled_from(IDS), st.sampled_from(["x", "y"])),
               min_size=1, max_size=30)


@settings(max_examples=1000, deadline=None)
@given(ops, st.integers(min_value=1, max_value=4))
def test_view_advanced_by_deltas_equals_a_full_authorization(steps: list[tuple[str, bool, str, str, str]],
                                                             every: int) -> None:
    """Re-parenting, aliases, cycles, deletes: the incremental view and the changes it reports stay exact."""
    index = EntryIndex(SERVER, retained=10)
    index.reset([], seq=0)
    view, changed = advance(index, None, AGENT, NODE_SELECTORS)
    sent: dict[str, RegistrationEntry] = {eid: e for eid, e in changed.items() if e is not None}
    for n, (eid, delete, parent, spiffe, sel) in enumerate(steps, start=1):
        rev = index.entries[eid].revision + 1 if eid in index.entries else 0
        index.apply({eid: None if delete else _entry(eid, parent, spiffe, sel=sel, rev=rev)}, seq=n)
        if n % every:
            continue  # the stream lags: several deltas at once
        view, changed = advance(index, view, AGENT, NODE_SELECTORS)
        for cid, entry in changed.items():
            if entry is None:
                sent.pop(cid, None)
            else:
                sent[cid] = entry
        expected = _expected(index)
        assert view.allowed == expected
        assert sent == expected  # what the agent holds after applying the reported changes
        for candidate in index.entries:
            assert (index.entitled(candidate, AGENT, NODE_SELECTORS) is not None) == (candidate in expected)


def test_entry_reparented_under_its_own_spiffe_id_leaves_the_view() -> None:
    """An entry moved under itself is reachable from no agent: it must not stay in through its own ID."""
    index = EntryIndex(SERVER)
    index.reset([_entry("e", AGENT, f"{TD}/loop")], seq=1)
    view, _ = advance(index, None, AGENT, NODE_SELECTORS)
    index.apply({"e": _entry("e", f"{TD}/loop", f"{TD}/loop", rev=1)}, seq=2)
    view, changed = advance(index, view, AGENT, NODE_SELECTORS)
    assert changed == {"e": None} and view.allowed == {} == _expected(index)


def test_reparented_entry_leaves_the_old_agents_view_and_joins_the_new() -> None:
    index = EntryIndex(SERVER)
    index.reset([_entry("w", AGENT, f"{TD}/w")], seq=1)
    mine, _ = advance(index, None, AGENT, NODE_SELECTORS)
    theirs, _ = advance(index, None, OTHER, NODE_SELECTORS)
    index.apply({"w": _entry("w", OTHER, f"{TD}/w", rev=1)}, seq=2)
    assert mine.touched_by(index.deltas_since(mine.version) or [], SERVER)
    mine, changed_mine = advance(index, mine, AGENT, NODE_SELECTORS)
    theirs, changed_theirs = advance(index, theirs, OTHER, NODE_SELECTORS)
    assert changed_mine == {"w": None} and not mine.allowed
    assert set(changed_theirs) == {"w"} and changed_theirs["w"] is not None


def test_unrelated_change_touches_no_view_and_changes_nothing() -> None:
    index = EntryIndex(SERVER)
    index.reset([_entry(f"w{i}", AGENT, f"{TD}/w{i}") for i in range(100)], seq=1)
    view, first = advance(index, None, AGENT, NODE_SELECTORS)
    assert len(first) == 100
    deltas = index.apply({"x": _entry("x", f"{TD}/elsewhere", f"{TD}/x")}, seq=2)
    assert not view.touched_by(deltas, SERVER)
    view, changed = advance(index, view, AGENT, NODE_SELECTORS)
    assert changed == {} and len(view.allowed) == 100


def test_view_behind_the_retained_deltas_is_rebuilt_and_diffed() -> None:
    index = EntryIndex(SERVER, retained=2)
    index.reset([_entry("a", AGENT, f"{TD}/a"), _entry("b", AGENT, f"{TD}/b")], seq=1)
    view, _ = advance(index, None, AGENT, NODE_SELECTORS)
    for n in range(5):
        index.apply({f"c{n}": _entry(f"c{n}", AGENT, f"{TD}/c{n}")}, seq=2 + n)
    index.apply({"a": None}, seq=10)
    assert index.deltas_since(view.version) is None
    view, changed = advance(index, view, AGENT, NODE_SELECTORS)
    assert changed["a"] is None and {f"c{n}" for n in range(5)} <= set(changed) and "b" not in changed


def test_alias_change_reaches_the_matching_agent() -> None:
    index = EntryIndex(SERVER)
    index.reset([_entry("w", f"{TD}/alias", f"{TD}/w")], seq=1)
    view, changed = advance(index, None, AGENT, NODE_SELECTORS)
    assert changed == {}
    deltas = index.apply({"alias": _entry("alias", SERVER, f"{TD}/alias", sel="x")}, seq=2)
    assert view.touched_by(deltas, SERVER)
    view, changed = advance(index, view, AGENT, NODE_SELECTORS)
    assert set(changed) == {"w"}


def test_federated_trust_domains_follow_the_view() -> None:
    index = EntryIndex(SERVER)
    index.reset([_entry("w", AGENT, f"{TD}/w", federates=("spiffe://other.org",))], seq=1)
    view, _ = advance(index, None, AGENT, NODE_SELECTORS)
    assert set(view.federates) == {"spiffe://other.org"}
    index.apply({"w": None}, seq=2)
    view, _ = advance(index, view, AGENT, NODE_SELECTORS)
    assert not view.federates


def test_notifier_wakes_only_the_affected_agents() -> None:
    async def run() -> None:
        index = EntryIndex(SERVER)
        index.reset([], seq=0)
        notifier = ChangeNotifier()
        a, b = notifier.subscribe(AGENT), notifier.subscribe(OTHER)
        a.view, _ = advance(index, None, AGENT, ())
        b.view, _ = advance(index, None, OTHER, ())
        a.recheck = b.recheck = False  # as a stream leaves them after its first push
        notifier.wake(index.apply({"w": _entry("w", AGENT, f"{TD}/w")}, seq=1), (), server_id=SERVER)
        assert a.event.is_set() and not b.event.is_set()
        assert not a.recheck  # an entry change: no need to re-read the agent or the revocations
        notifier.wake([], [AGENT], server_id=SERVER)  # already woken: still told to re-read its agent
        assert a.recheck
        a.event.clear()
        a.recheck = False
        notifier.wake([], [OTHER], server_id=SERVER)  # an agent change (ban, eviction, re-attestation)
        assert b.event.is_set() and b.recheck and not a.event.is_set() and not a.recheck
        notifier.notify_all()  # revocations, bundles, policy: every stream re-reads
        assert a.event.is_set() and a.recheck

    asyncio.run(run())


def test_feed_follows_the_datastore_log_and_reloads_when_it_was_pruned(tmp_path: Path) -> None:
    """A server behind the retained change log reloads and diffs: an entry deleted meanwhile leaves the view."""
    store = open_datastore(tmp_path / "db")

    async def run() -> None:
        feed = EntryFeed(store, ChangeNotifier(), SERVER, call=asyncio.to_thread)
        store.create_entry(_entry("a", AGENT, f"{TD}/a"))
        store.create_entry(_entry("b", AGENT, f"{TD}/b"))
        index = await feed.catch_up()
        watch = feed.notifier.subscribe(AGENT)
        watch.view, _ = advance(index, None, AGENT, NODE_SELECTORS)
        other = feed.notifier.subscribe(OTHER)
        other.view, _ = advance(index, None, OTHER, NODE_SELECTORS)
        store.update_entry(_entry("a", AGENT, f"{TD}/a2"))
        await feed.catch_up()
        assert watch.event.is_set() and not other.event.is_set()
        watch.view, changed = advance(index, watch.view, AGENT, NODE_SELECTORS)
        assert set(changed) == {"a"} and changed["a"] is not None and changed["a"].spiffe_id == f"{TD}/a2"
        store.delete_entry("b")
        store.create_entry(_entry("c", AGENT, f"{TD}/c"))
        store.prune_changes(keep_last=0)
        await feed.catch_up()
        watch.view, changed = advance(index, watch.view, AGENT, NODE_SELECTORS)
        assert changed.keys() == {"b", "c"} and changed["b"] is None
        assert watch.view.allowed == _expected(index) and set(index.entries) == {"a", "c"}

    try:
        asyncio.run(run())
    finally:
        store.close()
