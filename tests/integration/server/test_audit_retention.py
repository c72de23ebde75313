"""Audit at scale on real SQLite and PostgreSQL stores: pruning under a retention policy, signed
prune anchors that keep ``audit verify`` meaningful, and agent sub-chain heads that survive both
pruning and a restart without reading the chain."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from spiffe_py.audit import AuditEvent, BreakKind, build_event
from spiffe_py.clock import ManualClock
from spiffe_server.audit import CHECKPOINT_KEY_FILE, CentralAudit, CheckpointSigner, ForwardError, verify_store
from spiffe_server.datastore import DataStore, open_datastore
from tests.support.audit_sink import sealed_lines
from tests.support.server_proc import ServerProc

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
AGENT = "spiffe://example.org/spire/agent/join_token/a1"
Sql = Callable[[str], None]


def event(n: int) -> AuditEvent:
    return build_event(now=NOW + timedelta(seconds=n), actor="server", spiffe_id="spiffe://example.org/w",
                       selectors=[], decision="allow", reason=f"r{n}", method="MintX509SVID")


def agent_log(n: int) -> list[str]:
    return sealed_lines(build_event(now=NOW + timedelta(seconds=i), actor="agent", spiffe_id="spiffe://example.org/w",
                                    selectors=[], decision="allow", reason=f"a{i}", method="FetchJWTSVID")
                        for i in range(n))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DataStore, Sql]]:
    """A real store and a raw SQL hook (what an insider with database access can do)."""
    if request.param == "sqlite":
        db = tmp_path / "ds.sqlite3"
        store = open_datastore(db)

        def sql(statement: str) -> None:
            with sqlite3.connect(db) as conn:
                conn.execute(statement)
    else:
        url: str = request.getfixturevalue("pg_schema")
        store = open_datastore(url)

        def sql(statement: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(statement)  # type: ignore[arg-type]
    yield store, sql
    store.close()


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner.load_or_create(tmp_path / "keys" / CHECKPOINT_KEY_FILE)


def chain_of(store: DataStore, signer: CheckpointSigner | None, clock: ManualClock | None = None) -> CentralAudit:
    return CentralAudit(store, clock=clock or ManualClock(NOW), signer=signer, checkpoint_every=10)


def verify(store: DataStore, signer: CheckpointSigner) -> object:
    return verify_store(store.iter_audit(), store.iter_audit_checkpoints(), signer.public_key,
                        store.latest_audit_prune())


def test_pruning_by_count_keeps_the_newest_and_the_rest_still_verifies(
    backend: tuple[DataStore, Sql], signer: CheckpointSigner
) -> None:
    store, _ = backend
    chain = chain_of(store, signer)
    chain.append([event(n) for n in range(1, 51)])
    assert chain.prune(max_age=None, max_records=12, batch=7) == 38  # six transactions, each with its anchor
    assert [r.seq for r in store.iter_audit()] == list(range(39, 51))
    anchor = store.latest_audit_prune()
    assert anchor is not None and anchor.seq == 38
    assert [cp.seq for cp in store.iter_audit_checkpoints()] == [40, 50]  # the pruned ones went with their rows
    result = verify(store, signer)
    assert (result.ok, result.count) == (True, 12)  # type: ignore[attr-defined]
    assert chain.prune(max_age=None, max_records=12) == 0  # nothing more to do
    chain.append([event(51)])  # the chain goes on after pruning
    assert verify(store, signer).ok  # type: ignore[attr-defined]


def test_pruning_by_age_drops_only_older_records_and_never_the_head(
    backend: tuple[DataStore, Sql], signer: CheckpointSigner
) -> None:
    store, _ = backend
    clock = ManualClock(NOW + timedelta(seconds=30))
    chain = chain_of(store, signer, clock)
    chain.append([event(n) for n in range(1, 21)])  # record n is at NOW + n s
    assert chain.prune(max_age=timedelta(seconds=20), max_records=None) == 9  # older than NOW + 10 s: 1..9
    assert next(iter(store.iter_audit())).seq == 10
    clock.advance(timedelta(days=1))
    assert chain.prune(max_age=timedelta(seconds=1), max_records=None) == 10  # all but the head
    assert [r.seq for r in store.iter_audit()] == [20]
    assert verify(store, signer).ok  # type: ignore[attr-defined]


def test_without_a_signer_nothing_is_pruned(backend: tuple[DataStore, Sql]) -> None:
    store, _ = backend
    chain = chain_of(store, None)
    chain.append([event(n) for n in range(1, 6)])
    assert chain.prune(max_age=None, max_records=1) == 0
    assert len(list(store.iter_audit())) == 5


def test_cutting_the_head_of_a_chain_is_not_mistaken_for_pruning(
    backend: tuple[DataStore, Sql], signer: CheckpointSigner
) -> None:
    store, sql = backend
    chain = chain_of(store, signer)
    chain.append([event(n) for n in range(1, 31)])
    sql("DELETE FROM audit WHERE seq <= 20")  # checkpoint 20 stays: still no prune anchor
    result = verify(store, signer)
    assert (result.ok, result.kind, result.seq) == (False, BreakKind.TRUNCATED, 21)  # type: ignore[attr-defined]
    assert "no signed prune anchor" in result.reason  # type: ignore[attr-defined]

    chain.prune(max_age=None, max_records=5)  # an honest prune to 26..30, then an insider cuts one more
    assert verify(store, signer).ok  # type: ignore[attr-defined]
    sql("DELETE FROM audit WHERE seq = 26")
    result = verify(store, signer)
    assert (result.ok, result.kind) == (False, BreakKind.TRUNCATED)  # type: ignore[attr-defined]
    assert "were pruned, but the chain starts at seq 27" in result.reason  # type: ignore[attr-defined]


def test_a_prune_anchor_forged_or_replayed_as_a_checkpoint_fails(
    backend: tuple[DataStore, Sql], signer: CheckpointSigner, tmp_path: Path
) -> None:
    store, sql = backend
    chain = chain_of(store, signer)
    chain.append([event(n) for n in range(1, 21)])
    # a regular checkpoint's signature is not a prune anchor's: the signed context differs
    checkpoint = next(cp for cp in store.iter_audit_checkpoints() if cp.seq == 10)
    sql("DELETE FROM audit WHERE seq <= 10")
    sql(f"INSERT INTO audit_prunes (seq, hash, time, signature) VALUES (10, '{checkpoint.hash}', 0, "
        f"'{checkpoint.signature}')")
    result = verify(store, signer)
    assert (result.ok, result.kind) == (False, BreakKind.EDITED)  # type: ignore[attr-defined]
    assert "prune anchor at seq 10 is not signed" in result.reason  # type: ignore[attr-defined]
    # one signed by another key (the insider's) fails the same way
    other = CheckpointSigner.load_or_create(tmp_path / "insider.key")
    forged = other.sign(10, checkpoint.hash, NOW, prune=True)
    sql("DELETE FROM audit_prunes")
    sql(f"INSERT INTO audit_prunes (seq, hash, time, signature) VALUES (10, '{forged.hash}', 0, '{forged.signature}')")
    assert not verify(store, signer).ok  # type: ignore[attr-defined]


def test_agent_sub_chain_heads_survive_pruning_and_restart(
    backend: tuple[DataStore, Sql], signer: CheckpointSigner
) -> None:
    store, _ = backend
    lines = agent_log(8)
    chain = chain_of(store, signer)
    assert chain.forward(AGENT, lines[:4]) == 4
    chain.append([event(n) for n in range(1, 4)])
    assert chain.prune(max_age=None, max_records=1) == 6  # every forwarded record is gone from the chain
    reopened = chain_of(store, signer)  # reads the head row and nothing else
    assert reopened.head == chain.head
    assert reopened.forward(AGENT, lines[2:6]) == 2  # the resent overlap is recognised and skipped
    with pytest.raises(ForwardError):
        reopened.forward(AGENT, lines[7:])  # a gap after the stored head is still refused
    assert verify(store, signer).ok  # type: ignore[attr-defined]


def test_a_chain_written_before_agent_heads_were_kept_is_scanned_once(
    backend: tuple[DataStore, Sql], signer: CheckpointSigner
) -> None:
    store, sql = backend
    lines = agent_log(5)
    chain = chain_of(store, signer)
    chain.forward(AGENT, lines[:3])
    chain.append([event(1)])
    # what a database migrated from an older version looks like: heads unknown up to the old head
    sql("DELETE FROM audit_agent_heads")
    sql("UPDATE counters SET value = 4 WHERE name = 'audit_heads_pending'")
    reopened = chain_of(store, signer)
    assert store.audit_heads_pending() == 0
    assert store.audit_agent_head(AGENT) is not None
    assert reopened.forward(AGENT, lines[1:5]) == 2


def test_a_real_server_prunes_under_its_configured_policy_and_audit_verify_passes() -> None:
    config = ('trust_domain = "example.org"\n[audit_retention]\nmax_records = 3\nprune_interval = 1\n')
    with ServerProc.start(config_text=config) as srv:
        for _ in range(6):
            srv.cli("token", "generate")  # each one audited
        deadline = time.monotonic() + 15
        while (result := srv.cli_json("audit", "verify"))["count"] > 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert result == {"ok": True, "count": 3}
        assert "audit records pruned" in srv.log_text()
