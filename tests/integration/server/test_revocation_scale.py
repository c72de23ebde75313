"""`revoke agent` and `revoke entry --delete` on identities with 5,000 SVIDs (real server, SQLite and PostgreSQL).

The attack: a busy (or deliberately noisy) agent holds thousands of SVIDs; revoking it used to
overflow the audit record after the revocations were stored, so the agent was never evicted and
kept minting. The issuance rows are written straight into the server's datastore to build the
state fast; everything else goes through the CLI.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_server.datastore import Issuance, RevocationKind, open_datastore
from tests.integration.server.agent_client import agent_channel, attest
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
MANY = 5000


@pytest.fixture(params=["sqlite", "postgresql"])
def store_server(request: pytest.FixtureRequest) -> Iterator[tuple[ServerProc, str]]:
    """A running server and the datastore target it uses (a fresh PostgreSQL schema for postgresql)."""
    if request.param == "sqlite":
        with ServerProc.start() as srv:
            yield srv, str(srv.data_dir / "datastore.sqlite3")
        return
    url: str = request.getfixturevalue("postgres_url")
    schema = f"scale_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
    target = f"{url}?options=-csearch_path%3D{schema}"
    try:
        with ServerProc.start(extra_args=["--database", target]) as srv:
            yield srv, target
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


def _issue_many(target: str, *, agent_id: str, entry_id: str, spiffe_id: str) -> set[str]:
    """Log MANY unexpired X.509-SVIDs as issued to the agent under the entry; their serials."""
    expires = datetime.now(UTC) + timedelta(hours=1)
    serials = {f"{0x7000_0000 + i:x}{secrets.token_hex(4)}" for i in range(MANY)}
    store = open_datastore(target)
    try:
        store.record_issuances([Issuance(kind=RevocationKind.SERIAL, value=s, spiffe_id=spiffe_id, expires_at=expires,
                                         entry_id=entry_id, agent_id=agent_id, issuer="ab") for s in serials])
    finally:
        store.close()
    return serials


def _revoke_record(srv: ServerProc, what: str) -> dict[str, object]:
    (record,) = [r for r in srv.cli_json("audit", "show")["records"]
                 if r["method"] == "Revoke" and r["details"]["what"] == what]
    details: dict[str, object] = record["details"]
    return details


def _digest(values: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(values)).encode()).hexdigest()


async def test_revoke_agent_with_5000_svids_evicts_and_audits(store_server: tuple[ServerProc, str]) -> None:
    srv, target = store_server
    agent = await attest(srv, "join_token", str(srv.cli_json("token", "generate")["value"]).encode())
    entry = srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/busy", "--parent-id", agent.spiffe_id,
                         "--selector", "unix:uid:1000")
    serials = _issue_many(target, agent_id=agent.spiffe_id, entry_id=entry["id"], spiffe_id=f"{TD}/busy")
    serials.add(f"{agent.chain[0].serial_number:x}")  # the agent's own SVID is revoked with it

    out = srv.cli_json("revoke", "agent", "--spiffe-id", agent.spiffe_id, "--reason", "node lost")

    assert {r["value"] for r in out["revocations"]} == serials
    assert srv.cli_json("agent", "count") == {"count": 0}  # evicted in the same transaction
    listed = {r["value"] for r in srv.cli_json("revocation", "list")["revocations"]}
    assert listed == serials  # the full list stays queryable
    details = _revoke_record(srv, f"agent {agent.spiffe_id}")
    assert details["serial_count"] == len(serials) and details["serials_sha256"] == _digest(listed)
    assert "serials" not in details  # summarised: the record stays small
    async with agent_channel(srv, agent) as stub:
        with pytest.raises(GRPCError) as exc:
            await stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=entry["id"], audience=["db"]))
    assert exc.value.status is Status.PERMISSION_DENIED


def test_revoke_entry_delete_with_5000_svids_deletes_and_audits(store_server: tuple[ServerProc, str]) -> None:
    srv, target = store_server
    entry = srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/batch", "--parent-id", f"{TD}/node",
                         "--selector", "unix:uid:1000")
    serials = _issue_many(target, agent_id=f"{TD}/spire/agent/x", entry_id=entry["id"], spiffe_id=f"{TD}/batch")

    out = srv.cli_json("revoke", "entry", "--entry-id", entry["id"], "--delete", "--reason", "run ended")

    assert len(out["revocations"]) == MANY
    assert srv.cli_json("entry", "count") == {"count": 0}
    details = _revoke_record(srv, f"entry {entry['id']}")
    assert details["serial_count"] == MANY and details["serials_sha256"] == _digest(serials)
    assert details["deleted"] is True
    assert srv.cli("audit", "verify").returncode == 0
