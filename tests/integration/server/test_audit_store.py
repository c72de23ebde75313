"""The central audit chain over a real SQLite datastore: linking, verification, forwarding (issue 6)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spiffe_py.audit import (
    AuditEvent,
    AuditWriteError,
    BreakKind,
    build_event,
    canonical_json,
    record_hash,
    verify_chain,
)
from spiffe_py.clock import ManualClock
from spiffe_server.audit import CentralAudit, ForwardError, verify_store
from spiffe_server.datastore import DataStore, open_datastore
from spiffe_server.metrics import AUDIT_WRITE_FAILURES, REGISTRY
from tests.support.audit_sink import sealed_lines

NOW = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
AGENT = "spiffe://example.org/spire/agent/join_token/abc"


def event(n: int, decision: str = "allow", spiffe_id: str = "spiffe://example.org/w") -> AuditEvent:
    return build_event(now=NOW + timedelta(seconds=n), actor="server", spiffe_id=spiffe_id, selectors=["unix:uid:1"],
                       decision=decision, reason=f"r{n}", method="MintX509SVID", serial=f"{n:x}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ds.sqlite3"


@pytest.fixture
def store(db: Path) -> Iterator[DataStore]:
    s = open_datastore(db)
    yield s
    s.close()


def chain_of(store: DataStore) -> CentralAudit:
    return CentralAudit(store, clock=ManualClock(NOW))


def records(store: DataStore) -> list[dict[str, object]]:
    return [json.loads(r.record) for r in store.iter_audit()]


def test_stored_chain_links_like_spiffe_py_audit(store: DataStore) -> None:
    chain = chain_of(store)
    chain.append([event(1), event(2, "deny")])
    chain.append([event(3)])
    stored = records(store)
    assert [r["seq"] for r in stored] == [1, 2, 3]
    assert verify_chain(stored, first_seq=1).ok
    result = verify_store(store.iter_audit())
    assert (result.ok, result.count) == (True, 3)
    assert chain.head == (3, stored[-1]["hash"])
    assert [r.decision for r in store.iter_audit()] == ["allow", "deny", "allow"]


def test_reopened_chain_continues_after_the_stored_head(store: DataStore) -> None:
    chain_of(store).append([event(1)])
    chain_of(store).append([event(2)])
    assert verify_store(store.iter_audit()).ok


def test_two_appenders_sharing_a_store_stay_linked(store: DataStore) -> None:
    """Two servers on one database: a ConflictError makes the loser catch up and reseal."""
    first, second = chain_of(store), chain_of(store)
    first.append([event(1)])
    second.append([event(2)])
    first.append([event(3)])
    assert [r["seq"] for r in records(store)] == [1, 2, 3]
    assert verify_store(store.iter_audit()).ok


def _sql(db: Path, statement: str) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def test_editing_a_record_in_the_database_names_that_seq(store: DataStore, db: Path) -> None:
    chain_of(store).append([event(n) for n in range(1, 6)])
    _sql(db, "UPDATE audit SET record = replace(record, '\"reason\":\"r3\"', '\"reason\":\"rX\"') WHERE seq = 3")
    result = verify_store(store.iter_audit())
    assert (result.ok, result.seq, result.kind) == (False, 3, BreakKind.EDITED)


def test_editing_an_indexed_column_is_detected(store: DataStore, db: Path) -> None:
    """Hiding a deny from ``audit show --decision deny`` by editing the column alone fails verify."""
    chain_of(store).append([event(1), event(2, "deny"), event(3)])
    _sql(db, "UPDATE audit SET decision = 'allow' WHERE seq = 2")
    result = verify_store(store.iter_audit())
    assert (result.ok, result.seq, result.kind) == (False, 2, BreakKind.EDITED)
    assert "decision" in result.reason


def test_deleting_a_record_is_detected(store: DataStore, db: Path) -> None:
    chain_of(store).append([event(n) for n in range(1, 5)])
    _sql(db, "DELETE FROM audit WHERE seq = 2")
    result = verify_store(store.iter_audit())
    assert (result.ok, result.seq, result.kind) == (False, 3, BreakKind.REMOVED)


def test_unwritable_store_fails_loudly(db: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = open_datastore(db)
    chain = chain_of(store)
    store.close()
    before = REGISTRY.get_sample_value("spiffe_server_audit_write_failures_total") or 0.0
    with pytest.raises(AuditWriteError, match="audit: cannot write"):
        chain.append([event(1)])
    assert REGISTRY.get_sample_value("spiffe_server_audit_write_failures_total") == before + 1
    assert AUDIT_WRITE_FAILURES is not None
    assert "AUDIT WRITE FAILED" in caplog.text


# -- forwarded agent records ---------------------------------------------------------------------------


def agent_log(n: int) -> list[str]:
    return sealed_lines(build_event(now=NOW + timedelta(seconds=i), actor="agent", spiffe_id="spiffe://example.org/w",
                                    selectors=["unix:uid:1"], decision="allow" if i % 2 == 0 else "deny",
                                    reason=f"a{i}", method="FetchJWTSVID", jti=f"j{i}") for i in range(n))


def test_forwarded_records_are_wrapped_with_the_agent_id(store: DataStore) -> None:
    lines = agent_log(3)
    assert chain_of(store).forward(AGENT, lines) == 3
    stored = records(store)
    assert [r["actor"] for r in stored] == [AGENT] * 3
    assert [r["decision"] for r in stored] == ["allow", "deny", "allow"]
    assert [r["details"]["forwarded"]["seq"] for r in stored] == [0, 1, 2]  # type: ignore[index]
    assert stored[1]["jti"] == "j1" and stored[1]["method"] == "FetchJWTSVID"
    assert verify_store(store.iter_audit()).ok


def test_resent_records_are_skipped_and_the_sub_chain_continues_across_restarts(store: DataStore) -> None:
    lines = agent_log(5)
    assert chain_of(store).forward(AGENT, lines[:3]) == 3
    reopened = chain_of(store)  # a server restart: agent heads come back from the stored chain
    assert reopened.forward(AGENT, lines[1:5]) == 2
    assert [r["details"]["forwarded"]["seq"] for r in records(store)] == [0, 1, 2, 3, 4]  # type: ignore[index]


def test_a_gap_in_the_agent_sub_chain_is_refused_and_recorded(store: DataStore) -> None:
    lines = agent_log(5)
    chain = chain_of(store)
    chain.forward(AGENT, lines[:2])
    with pytest.raises(ForwardError, match="seq 3"):
        chain.forward(AGENT, lines[3:])
    last = records(store)[-1]
    assert (last["decision"], last["method"], last["actor"]) == ("deny", "ForwardAudit", AGENT)
    assert "removed" in str(last["reason"])


def test_an_edited_agent_record_is_refused(store: DataStore) -> None:
    lines = agent_log(2)
    edited = lines[1].replace('"reason":"a1"', '"reason":"forged"')
    with pytest.raises(ForwardError, match="edited"):
        chain_of(store).forward(AGENT, [lines[0], edited])
    assert [r["decision"] for r in records(store)] == ["deny"]  # nothing of the batch was stored


def test_malformed_forwarded_records_are_refused(store: DataStore) -> None:
    with pytest.raises(ForwardError, match="not JSON"):
        chain_of(store).forward(AGENT, ["{nope"])
    with pytest.raises(ForwardError, match="at most 1000"):
        chain_of(store).forward(AGENT, ["{}"] * 1001)


def test_an_agent_chain_restart_is_accepted(store: DataStore) -> None:
    chain = chain_of(store)
    chain.forward(AGENT, agent_log(3))
    fresh = agent_log(2)  # the agent lost its file and starts again at seq 0
    fresh = [line.replace('"reason":"a', '"reason":"b') for line in fresh]
    with pytest.raises(ForwardError):  # rewritten lines no longer hash: refused
        chain.forward(AGENT, fresh)
    assert chain.forward(AGENT, _restarted()) == 2


def _restarted() -> list[str]:
    return sealed_lines(build_event(now=NOW + timedelta(minutes=5, seconds=i), actor="agent", spiffe_id=None,
                                    selectors=(), decision="allow", reason=f"restart{i}", method="FetchX509SVID")
                        for i in range(2))


@pytest.mark.parametrize("time", ["2026-05-06T07:08:09+00:00", "2026-05-06T07:08:09Z", "2026-05-06 07:08:09.000000Z"])
def test_forwarded_record_time_must_be_the_audit_format(store: DataStore, time: str) -> None:
    """A correctly chained agent record whose time is not YYYY-MM-DDTHH:MM:SS.ffffffZ is refused, nothing stored."""
    record = json.loads(agent_log(1)[0])
    record["time"] = time
    record["hash"] = record_hash(record)
    with pytest.raises(ForwardError, match=r"is not YYYY-MM-DDTHH:MM:SS\.ffffffZ"):
        chain_of(store).forward(AGENT, [canonical_json(record).decode()])
    assert records(store) == []
