"""An agent's current and pending SVID serials (SPIRE's CertSerialNumber / NewCertSerialNumber), on both backends.

Renewal stores the pending serial next to the current one; promotion is a compare-and-set, so of
two servers sharing one database only one promotes; an old-schema database gains the columns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from spiffe_server.datastore import (
    AttestedAgent,
    ChangeKind,
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    SqlDataStore,
)
from spiffe_server.datastore.postgres import PostgresBackend
from spiffe_server.datastore.schema import MIGRATIONS, migrate
from spiffe_server.datastore.sqlite import SqliteBackend
from tests.datastore.conftest import StoreFactory
from tests.datastore.helpers import AGENT_ID, LATER, NOW, TD, make_agent

NEWER = LATER + timedelta(hours=1)
RACE_ROUNDS = 10


def test_new_agent_has_no_pending_serial(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    agent = store.get_agent(AGENT_ID)
    assert (agent.serial, agent.new_serial, agent.new_expires_at) == ("01", "", None)


def test_pending_serial_round_trips_through_create_update_and_list(store: SqlDataStore) -> None:
    agent = make_agent(new_serial="0a", new_expires_at=NEWER)
    assert store.create_agent(agent) == agent
    assert store.get_agent(AGENT_ID) == agent
    assert store.list_agents().items == (agent,)
    cleared = replace(agent, serial="0b", new_serial="", new_expires_at=None, updated_at=LATER)
    assert store.update_agent(cleared) == cleared  # re-attestation: a full replace clears the pending slot
    assert store.get_agent(AGENT_ID) == cleared


def test_pending_serial_and_its_expiry_go_together() -> None:
    with pytest.raises(InvalidArgumentError, match="new_expires_at"):
        make_agent(new_serial="0a")
    with pytest.raises(InvalidArgumentError, match="new_expires_at"):
        make_agent(new_expires_at=NEWER)


def test_renew_keeps_current_serial_and_records_a_change(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    seq = store.change_seq()
    renewed = store.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=NEWER, now=LATER)
    assert renewed == make_agent(new_serial="02", new_expires_at=NEWER, updated_at=LATER)
    assert store.get_agent(AGENT_ID) == renewed
    assert store.change_seq() == seq + 1


def test_second_renewal_replaces_an_unused_pending_serial(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    store.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=LATER, now=NOW)
    again = store.renew_agent(AGENT_ID, serial="01", new_serial="03", new_expires_at=NEWER, now=LATER)
    assert (again.serial, again.new_serial, again.new_expires_at) == ("01", "03", NEWER)


def test_renew_is_refused_once_the_current_serial_changed(store: SqlDataStore) -> None:
    store.create_agent(make_agent(serial="05"))
    with pytest.raises(ConflictError, match="serials changed"):
        store.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=NEWER, now=LATER)
    assert store.get_agent(AGENT_ID).new_serial == ""
    with pytest.raises(NotFoundError, match="no such agent"):
        store.renew_agent(f"{TD}/spire/agent/x", serial="01", new_serial="02", new_expires_at=NEWER, now=LATER)


def test_promote_moves_pending_to_current_and_records_an_agent_change(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    store.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=NEWER, now=NOW)
    seq = store.change_seq()
    promoted = store.promote_agent_serial(AGENT_ID, serial="01", new_serial="02", now=LATER)
    assert promoted == make_agent(serial="02", expires_at=NEWER, updated_at=LATER)
    assert store.get_agent(AGENT_ID) == promoted
    # streams opened with the superseded SVID learn of it from the change log
    assert [(c.kind, c.key) for c in store.changes_since(seq).changes] == [(ChangeKind.AGENT, AGENT_ID)]


@pytest.mark.parametrize(("serial", "new_serial"), [("01", "03"), ("02", "02"), ("09", "02")])
def test_promote_is_a_compare_and_set(store: SqlDataStore, serial: str, new_serial: str) -> None:
    store.create_agent(make_agent())
    renewed = store.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=NEWER, now=NOW)
    with pytest.raises(ConflictError, match="serials changed"):
        store.promote_agent_serial(AGENT_ID, serial=serial, new_serial=new_serial, now=LATER)
    assert store.get_agent(AGENT_ID) == renewed


def test_promote_without_pending_serial_or_agent_fails(store: SqlDataStore) -> None:
    store.create_agent(make_agent())
    with pytest.raises(ConflictError):
        store.promote_agent_serial(AGENT_ID, serial="01", new_serial="01", now=LATER)
    with pytest.raises(InvalidArgumentError, match="new_serial"):
        store.promote_agent_serial(AGENT_ID, serial="01", new_serial="", now=LATER)
    with pytest.raises(NotFoundError, match="no such agent"):
        store.promote_agent_serial(f"{TD}/spire/agent/x", serial="01", new_serial="02", now=LATER)


def _race(calls: list[Callable[[], AttestedAgent]]) -> list[AttestedAgent | ConflictError]:
    """Run the calls at the same moment in threads; each result is the agent or the ConflictError."""
    barrier = threading.Barrier(len(calls))
    results: list[AttestedAgent | ConflictError | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except ConflictError as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def test_two_servers_promoting_at_once_have_exactly_one_winner(backend: StoreFactory) -> None:
    """Two stores = two servers on one database (separate connections on PostgreSQL)."""
    one, two = backend.open(), backend.open()
    one.create_agent(make_agent(serial="0"))
    for n in range(RACE_ROUNDS):
        current, new = f"{n:x}", f"{n + 1:x}"
        one.renew_agent(AGENT_ID, serial=current, new_serial=new, new_expires_at=NEWER, now=NOW)
        results = _race([lambda c=current, w=new: one.promote_agent_serial(  # type: ignore[misc]
                             AGENT_ID, serial=c, new_serial=w, now=LATER),
                         lambda c=current, w=new: two.promote_agent_serial(  # type: ignore[misc]
                             AGENT_ID, serial=c, new_serial=w, now=LATER)])
        assert sum(isinstance(r, AttestedAgent) for r in results) == 1, results
        assert (two.get_agent(AGENT_ID).serial, two.get_agent(AGENT_ID).new_serial) == (new, "")


def test_promotion_racing_a_second_renewal_keeps_one_consistent_outcome(backend: StoreFactory) -> None:
    """A promotion of 02 and a renewal (authenticated with 01) issuing 03: whichever commits second loses."""
    one, two = backend.open(), backend.open()
    one.create_agent(make_agent())
    one.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=LATER, now=NOW)
    results = _race([lambda: one.promote_agent_serial(AGENT_ID, serial="01", new_serial="02", now=LATER),
                     lambda: two.renew_agent(AGENT_ID, serial="01", new_serial="03", new_expires_at=NEWER,
                                             now=LATER)])
    final = one.get_agent(AGENT_ID)
    if isinstance(results[0], AttestedAgent):  # promoted first: the renewal saw a changed current serial
        assert isinstance(results[1], ConflictError)
        assert (final.serial, final.new_serial) == ("02", "")
    else:  # renewed first: 02 was replaced and can no longer be promoted
        assert isinstance(results[1], AttestedAgent)
        assert (final.serial, final.new_serial) == ("01", "03")


def _v3_database(path: Path) -> None:
    """A database file as the schema-3 code left it, holding one agent row."""
    backend = SqliteBackend(path)
    try:
        assert migrate(backend, MIGRATIONS[:3]) == 3
        with backend.transaction() as tx:
            tx.execute("INSERT INTO agents (spiffe_id, attestation_type, serial, expires_at, banned, can_reattest,"
                       " selectors, created_at, updated_at) VALUES (?, 'join_token', '01', 1, ?, ?, '[]', 1, 1)",
                       (AGENT_ID, False, False))
    finally:
        backend.close()


def test_old_schema_database_gains_empty_pending_serial(backend: StoreFactory) -> None:
    """A database at schema 3 holding an agent row opens, migrates to 4 and reads the pending serial as empty."""
    if backend.kind == "sqlite":
        _v3_database(Path(backend.target))
    else:
        pg = PostgresBackend(backend.target)
        try:
            assert migrate(pg, MIGRATIONS[:3]) == 3
        finally:
            pg.close()
        backend.raw("INSERT INTO agents (spiffe_id, attestation_type, serial, expires_at, banned, can_reattest,"
                    " selectors, created_at, updated_at) VALUES (?, 'join_token', '01', 1, false, false, '[]', 1, 1)",
                    (AGENT_ID,))
    assert backend.raw("SELECT version FROM schema_version ORDER BY version") == [(1,), (2,), (3,)]
    store = backend.open()
    assert store.schema_version == len(MIGRATIONS)
    agent = store.get_agent(AGENT_ID)
    assert (agent.serial, agent.new_serial, agent.new_expires_at) == ("01", "", None)
    store.renew_agent(AGENT_ID, serial="01", new_serial="02", new_expires_at=NEWER, now=LATER)
    assert store.promote_agent_serial(AGENT_ID, serial="01", new_serial="02", now=LATER).serial == "02"
