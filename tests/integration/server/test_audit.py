"""The central audit trail of a real spiffe-server: what is recorded, ``audit show``, ``audit verify`` (issue 6).

Acceptance 3 (server side): records cover attestations, issuance, denials and admin changes;
``audit verify`` passes on the untouched store and, after one record is edited with sqlite3,
fails naming that record's seq.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py.audit import build_event
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, csr_for
from tests.support.audit_sink import sealed_lines
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"

POLICY = '''
[[rule]]
name = "no-payments"
when = '"payments" in request.audiences'
effect = "deny"
reason = "payments is closed"
'''


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProc]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    with ServerProc.start(extra_args=["--policy", str(policy)]) as srv:
        yield srv


def show(srv: ServerProc, *args: str) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = srv.cli_json("audit", "show", *args)["records"]
    return records


async def _populate(srv: ServerProc) -> tuple[TestAgent, str, str]:
    """One of everything: token, attestation (ok and replayed), entry, X.509 issue, JWT deny, ban."""
    token = srv.cli_json("token", "generate")["value"]
    agent = await attest(srv, "join_token", token.encode())
    with pytest.raises(GRPCError):
        await attest(srv, "join_token", token.encode())  # replay
    entry_id = srv.cli_json("entry", "create", "--parent-id", agent.spiffe_id, "--spiffe-id", f"{TD}/web",
                            "--selector", "unix:uid:1000")["id"]
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(srv, agent) as stub:
        resp = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=[
            agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(key, f"{TD}/web"))]))
        assert resp.results[0].status_code == Status.OK.value
        with pytest.raises(GRPCError) as err:
            await stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=["payments"]))
        assert err.value.status is Status.PERMISSION_DENIED
    return agent, token, entry_id


async def test_records_cover_attestation_issuance_denial_and_admin_changes(server: ServerProc) -> None:
    agent, token, entry_id = await _populate(server)
    other = await attest(server, "join_token", server.cli_json("token", "generate")["value"].encode())
    server.cli("agent", "ban", "--spiffe-id", other.spiffe_id)
    records = show(server)
    summary = [(r["method"], r["decision"]) for r in records]
    assert summary[:6] == [("CreateJoinToken", "allow"), ("AttestAgent", "allow"), ("AttestAgent", "deny"),
                           ("CreateEntry", "allow"), ("BatchNewX509SVID", "allow"), ("NewJWTSVID", "deny")]
    assert ("BanAgent", "allow") in summary
    attested, replay, created, issued, denied = records[1:6]
    assert attested["spiffe_id"] == agent.spiffe_id and attested["details"] == {"attestor": "join_token"}
    assert "already been used" in replay["reason"]
    assert token not in json.dumps(replay) and token not in json.dumps(records[0])  # never the token itself
    assert created["actor"].startswith("uid:") and created["details"]["entry_id"] == entry_id
    assert (issued["actor"], issued["spiffe_id"], issued["selectors"]) == (agent.spiffe_id, f"{TD}/web",
                                                                           ["unix:uid:1000"])
    assert len(issued["serial"]) > 8 and issued["details"]["serials"] == [issued["serial"]]
    assert (denied["reason"], denied["details"]["rule"], denied["details"]["audiences"]) == (
        "payments is closed", "no-payments", ["payments"])


async def test_audit_show_filters(server: ServerProc) -> None:
    agent, _, _ = await _populate(server)
    denies = show(server, "--decision", "deny")
    assert [r["method"] for r in denies] == ["AttestAgent", "NewJWTSVID"]
    assert {r["method"] for r in show(server, "--spiffe-id", f"{TD}/web")} == {
        "CreateEntry", "BatchNewX509SVID", "NewJWTSVID"}
    assert show(server, "--since", "2999-01-01T00:00:00Z") == []
    assert len(show(server, "--since", str(int(datetime.now(UTC).timestamp()) - 3600))) == len(show(server))
    pretty = server.cli("audit", "show", "--decision", "deny").stdout
    assert "NewJWTSVID" in pretty and "payments is closed" in pretty and f"actor={agent.spiffe_id}" in pretty
    bad = server.cli("audit", "show", "--since", "yesterday", check=False)
    assert bad.returncode == 2 and "--since" in bad.stderr


async def test_audit_verify_passes_then_names_the_record_edited_in_the_database(server: ServerProc) -> None:
    await _populate(server)
    ok = server.cli("audit", "verify")
    assert ok.stdout.startswith("audit chain OK: ")
    denied = show(server, "--decision", "deny")[-1]
    db = sqlite3.connect(server.data_dir / "datastore.sqlite3")
    try:  # an insider turns the deny into an allow, keeping the JSON valid
        db.execute("UPDATE audit SET record = replace(record, '\"decision\":\"deny\"', '\"decision\":\"allow\"') "
                   "WHERE seq = ?", (denied["seq"],))
        db.commit()
    finally:
        db.close()
    broken = server.cli("audit", "verify", check=False)
    assert broken.returncode == 1
    assert f"audit chain broken at record seq {denied['seq']} (edited)" in broken.stderr
    as_json = server.cli("audit", "verify", "--output", "json", check=False)
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["seq"] == denied["seq"]


def _agent_records(n: int) -> list[str]:
    return sealed_lines(build_event(now=datetime.now(UTC), actor="agent", spiffe_id=f"{TD}/web",
                                    selectors=["unix:uid:1"], decision="deny" if i == 1 else "allow",
                                    reason=f"agent decision {i}", method="FetchJWTSVID") for i in range(n))


async def test_forwarded_agent_records_join_the_central_chain(server: ServerProc) -> None:
    agent = await attest(server, "join_token", server.cli_json("token", "generate")["value"].encode())
    lines = _agent_records(5)
    async with agent_channel(server, agent) as stub:
        assert (await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=lines[:2]))).accepted == 2
        assert (await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=lines[1:3]))).accepted == 1
        for bad in (lines[4:], ["not json"]):  # seq 3 missing; not a record
            with pytest.raises(GRPCError) as err:
                await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=bad))
            assert err.value.status is Status.FAILED_PRECONDITION
    forwarded = [r for r in show(server) if r["actor"] == agent.spiffe_id]
    assert [(r["reason"], r["details"].get("forwarded", {}).get("seq")) for r in forwarded[:3]] == [
        ("agent decision 0", 0), ("agent decision 1", 1), ("agent decision 2", 2)]
    assert forwarded[1]["decision"] == "deny"
    refused = forwarded[3]
    assert (refused["method"], refused["decision"]) == ("ForwardAudit", "deny")
    assert "records with seq 3..3 are missing" in refused["reason"]
    assert server.cli("audit", "verify").returncode == 0


async def test_forward_audit_needs_an_agent_svid(server: ServerProc) -> None:
    async with agent_channel(server) as stub:
        with pytest.raises(GRPCError) as err:
            await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=_agent_records(1)))
    assert err.value.status in (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED)


async def test_a_workload_listed_in_audit_forwarders_forwards_like_an_agent_until_revoked() -> None:
    listed, unlisted = f"{TD}/broker", f"{TD}/web"
    config = f'trust_domain = "example.org"\n\n[audit]\nforwarders = ["{listed}"]\n'
    with ServerProc.start(config_text=config) as srv:
        agent = await attest(srv, "join_token", srv.cli_json("token", "generate")["value"].encode())
        workloads = {}
        async with agent_channel(srv, agent) as stub:
            for spiffe_id in (listed, unlisted):
                entry_id = srv.cli_json("entry", "create", "--parent-id", agent.spiffe_id, "--spiffe-id", spiffe_id,
                                        "--selector", "unix:uid:1")["id"]
                key = ec.generate_private_key(ec.SECP256R1())
                resp = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=[
                    agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(key, spiffe_id))]))
                chain = [x509.load_der_x509_certificate(d) for d in resp.results[0].cert_chain]
                workloads[spiffe_id] = TestAgent(spiffe_id, chain, key, agent.result)
        lines = _agent_records(3)
        async with agent_channel(srv, workloads[listed]) as stub:
            assert (await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=lines[:2]))).accepted == 2
            assert (await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=lines))).accepted == 1
            with pytest.raises(GRPCError) as err:  # bounded as for agents
                await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=["{}"] * 1001))
            assert err.value.status is Status.FAILED_PRECONDITION and "at most 1000 records" in str(err.value.message)
        async with agent_channel(srv, workloads[unlisted]) as stub:
            with pytest.raises(GRPCError) as err:
                await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=lines))
        assert err.value.status is Status.PERMISSION_DENIED
        assert err.value.message == (f"audit: '{unlisted}' may not forward audit records: it is not an attested "
                                     "agent and not listed in [audit] forwarders")
        serial = f"{workloads[listed].chain[0].serial_number:x}"
        srv.cli_json("revoke", "svid", "--serial", serial, "--reason", "leaked key")
        async with agent_channel(srv, workloads[listed]) as stub:
            with pytest.raises(GRPCError) as err:
                await stub.ForwardAudit(agent_pb2.ForwardAuditRequest(records=_agent_records(1)))
        assert err.value.status is Status.PERMISSION_DENIED and "is revoked" in str(err.value.message)
        records = show(srv)
        stored = [(r["reason"], r["details"]["forwarded"]["seq"]) for r in records if r["actor"] == listed
                  and r["method"] != "ForwardAudit"]
        assert stored == [("agent decision 0", 0), ("agent decision 1", 1), ("agent decision 2", 2)]
        denied = [(r["actor"], r["decision"]) for r in records if r["method"] == "ForwardAudit"]
        assert denied == [(unlisted, "deny"), (listed, "deny")]
        assert srv.cli("audit", "verify").returncode == 0
