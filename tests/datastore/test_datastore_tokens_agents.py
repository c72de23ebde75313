"""Join tokens (single use, also under races) and attested agents, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from spiffe_server.datastore import (
    AgentFilter,
    AlreadyExistsError,
    JoinToken,
    NotFoundError,
    Page,
    SqlDataStore,
)
from tests.datastore.conftest import StoreFactory
from tests.datastore.helpers import AGENT_ID, LATER, NOW, TD, make_agent, sel

RACE_ROUNDS = 10


def test_join_token_is_single_use(store: SqlDataStore) -> None:
    store.create_join_token(JoinToken(token="tok-1", expires_at=LATER, spiffe_id=f"{TD}/alias"))
    used = store.consume("tok-1", now=NOW)
    assert used == JoinToken(token="tok-1", expires_at=LATER, spiffe_id=f"{TD}/alias")
    assert store.consume("tok-1", now=NOW) is None


def test_unknown_join_token_is_not_returned(store: SqlDataStore) -> None:
    store.create_join_token(JoinToken(token="tok-1", expires_at=LATER))
    assert store.consume("tok-2", now=NOW) is None
    assert store.consume("tok-1", now=NOW) == JoinToken(token="tok-1", expires_at=LATER, spiffe_id=None)


def test_expired_join_token_is_not_returned_and_is_gone(store: SqlDataStore) -> None:
    store.create_join_token(JoinToken(token="tok-1", expires_at=LATER))
    assert store.consume("tok-1", now=LATER) is None  # expiry is exclusive
    assert store.consume("tok-1", now=NOW) is None  # and the expired token was removed


def test_prune_join_tokens_removes_expired_only(store: SqlDataStore) -> None:
    store.create_join_token(JoinToken(token="old", expires_at=NOW))
    store.create_join_token(JoinToken(token="new", expires_at=LATER))
    assert store.prune_join_tokens(now=NOW) == 1
    assert store.consume("new", now=NOW) is not None


def test_duplicate_join_token_is_rejected_without_echoing_it(store: SqlDataStore) -> None:
    store.create_join_token(JoinToken(token="secret-token-value", expires_at=LATER))
    with pytest.raises(AlreadyExistsError) as info:
        store.create_join_token(JoinToken(token="secret-token-value", expires_at=LATER))
    assert "secret-token-value" not in str(info.value)


def test_join_token_is_stored_hashed_and_kept_out_of_repr(backend: StoreFactory) -> None:
    token = JoinToken(token="secret-token-value", expires_at=LATER)
    backend.open().create_join_token(token)
    rows = backend.raw("SELECT token_hash, expires_at, spiffe_id FROM join_tokens")
    assert len(rows) == 1 and "secret-token-value" not in repr(rows)
    assert "secret-token-value" not in repr(token)


def _race(consumers: list[Callable[[], JoinToken | None]]) -> list[JoinToken | None]:
    """Run the consumers at the same moment in threads; return their results."""
    barrier = threading.Barrier(len(consumers))
    results: list[JoinToken | None] = [None] * len(consumers)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = consumers[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(consumers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_join_token_race_in_one_store_has_exactly_one_winner(store: SqlDataStore) -> None:
    for n in range(RACE_ROUNDS):
        store.create_join_token(JoinToken(token=f"race-{n}", expires_at=LATER))
        results = _race([lambda n=n: store.consume(f"race-{n}", now=NOW)] * 2)  # type: ignore[misc]
        assert sum(r is not None for r in results) == 1, results


def test_join_token_race_between_two_servers_has_exactly_one_winner(backend: StoreFactory) -> None:
    """Two stores = two servers on one database (separate connections on PostgreSQL)."""
    one, two = backend.open(), backend.open()
    for n in range(RACE_ROUNDS):
        one.create_join_token(JoinToken(token=f"race-{n}", expires_at=LATER))
        results = _race([lambda n=n: one.consume(f"race-{n}", now=NOW),  # type: ignore[misc]
                         lambda n=n: two.consume(f"race-{n}", now=NOW)])  # type: ignore[misc]
        assert sum(r is not None for r in results) == 1, results


def test_agent_create_get_update_keeps_created_at(store: SqlDataStore) -> None:
    agent = make_agent(selectors=sel("x509pop:subject:cn:node", "join_token:abc"), can_reattest=True)
    assert store.create_agent(agent) == agent
    assert store.get_agent(AGENT_ID) == agent
    changed = replace(agent, serial="02", expires_at=LATER + timedelta(hours=1), created_at=LATER, updated_at=LATER,
                      selectors=sel("join_token:abc"))
    updated = store.update_agent(changed)
    assert updated == replace(changed, created_at=NOW)
    assert store.get_agent(AGENT_ID) == updated


def test_agent_duplicate_and_missing(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    with pytest.raises(AlreadyExistsError, match="agent already exists"):
        store.create_agent(make_agent())
    missing = f"{TD}/spire/agent/x"
    for call in (store.get_agent, store.delete_agent, lambda i: store.ban_agent(i, now=NOW),
                 lambda i: store.update_agent(make_agent(spiffe_id=i))):
        with pytest.raises(NotFoundError, match="no such agent"):
            call(missing)


def test_ban_marks_agent_banned(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    banned = store.ban_agent(AGENT_ID, now=LATER)
    assert banned.banned and banned.updated_at == LATER and banned.created_at == NOW
    assert store.get_agent(AGENT_ID).banned


def test_evict_deletes_agent_and_allows_reattestation(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    assert store.delete_agent(AGENT_ID).spiffe_id == AGENT_ID
    with pytest.raises(NotFoundError):
        store.get_agent(AGENT_ID)
    store.create_agent(make_agent(serial="03"))
    assert store.get_agent(AGENT_ID).serial == "03"


def test_agent_listing_filters_and_paging(store: SqlDataStore) -> None:
    for i in range(7):
        store.create_agent(make_agent(spiffe_id=f"{TD}/spire/agent/x509pop/{i}", attestation_type="x509pop",
                                      can_reattest=True, expires_at=NOW + timedelta(minutes=i)))
    store.create_agent(make_agent())
    store.ban_agent(f"{TD}/spire/agent/x509pop/3", now=NOW)
    assert store.count_agents() == 8
    assert store.count_agents(AgentFilter(attestation_type="join_token")) == 1
    assert store.count_agents(AgentFilter(banned=True)) == 1
    assert store.count_agents(AgentFilter(banned=False, can_reattest=True)) == 6
    assert store.count_agents(AgentFilter(expires_before=NOW + timedelta(minutes=2))) == 2
    seen: list[str] = []
    page = Page(size=3)
    while True:
        result = store.list_agents(AgentFilter(attestation_type="x509pop"), page)
        seen.extend(a.spiffe_id for a in result.items)
        if not result.next_token:
            break
        page = Page(result.next_token, 3)
    assert seen == [f"{TD}/spire/agent/x509pop/{i}" for i in range(7)]
