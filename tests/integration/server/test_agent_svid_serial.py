"""A real spiffe-server accepts an agent SVID only while it is the agent's current or pending one (SPIRE parity).

After RenewAgent the server accepts the SVID the agent used so far and the one just issued; the
first call with the new one promotes it and from then on the old one is PERMISSION_DENIED. The
test client below plays the agent (and the thief who copied its old SVID off the node).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._x509pop import x509pop_respond
from spiffe_server.revocation import serial_hex
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, csr_for, server_roots
from tests.support.ca import CA, Issued
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
STALE = "agent svid does not match the expected serial number"


def _serial(agent: TestAgent) -> str:
    return serial_hex(agent.chain[0].serial_number)


async def _renew(srv: ServerProc, agent: TestAgent, roots: str) -> TestAgent:
    """RenewAgent authenticated with ``agent``'s SVID; the renewed agent (same ID, new SVID and key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(srv, agent, roots) as stub:
        resp = await stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(key)))
    chain = [x509.load_der_x509_certificate(d) for d in resp.svid_chain]
    return TestAgent(agent.spiffe_id, chain, key, agent.result)


async def _mint(srv: ServerProc, agent: TestAgent, roots: str, entry_id: str) -> Status:
    """BatchNewX509SVID for one entry with ``agent``'s SVID: OK, or the status the call was refused with."""
    key = ec.generate_private_key(ec.SECP256R1())
    req = agent_pb2.BatchNewX509SVIDRequest(params=[
        agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(key, f"{TD}/web"))])
    try:
        async with agent_channel(srv, agent, roots) as stub:
            resp = await stub.BatchNewX509SVID(req)
    except GRPCError as err:
        if err.status is Status.PERMISSION_DENIED:
            assert err.message is not None and STALE in err.message, err.message
        return err.status
    assert resp.results[0].status_code == Status.OK.value, resp.results[0].status_message
    return Status.OK


def _stored(srv: ServerProc, agent: TestAgent) -> str:
    return str(srv.cli_json("agent", "show", "--spiffe-id", agent.spiffe_id)["serial"])


async def _attested_with_entry(srv: ServerProc) -> tuple[TestAgent, str, str]:
    agent = await attest(srv, "join_token", srv.cli_json("token", "generate")["value"].encode())
    entry_id = srv.cli_json("entry", "create", "--parent-id", agent.spiffe_id, "--spiffe-id", f"{TD}/web",
                            "--selector", "unix:uid:1000")["id"]
    return agent, str(entry_id), server_roots(srv)


async def test_old_svid_works_until_new_one_is_used_then_is_refused(server: ServerProc) -> None:
    old, entry_id, roots = await _attested_with_entry(server)
    new = await _renew(server, old, roots)
    assert _stored(server, old) == _serial(old)  # renewal keeps the current serial
    assert await _mint(server, old, roots, entry_id) is Status.OK  # in flight with the old SVID: still fine
    assert await _mint(server, new, roots, entry_id) is Status.OK  # first use of the new one promotes it
    assert _stored(server, old) == _serial(new)
    assert await _mint(server, old, roots, entry_id) is Status.PERMISSION_DENIED
    async with agent_channel(server, old, roots) as stub:
        with pytest.raises(GRPCError) as refused:
            async with stub.SyncAuthorized.open() as stream:
                await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
                await stream.recv_message()
        assert refused.value.status is Status.PERMISSION_DENIED
        with pytest.raises(GRPCError) as renew_refused:
            await stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(ec.generate_private_key(ec.SECP256R1()))))
        assert renew_refused.value.status is Status.PERMISSION_DENIED
    assert await _mint(server, new, roots, entry_id) is Status.OK  # the agent itself is unaffected
    denied = [r for r in server.cli_json("audit", "show", "--decision", "deny")["records"]
              if r["spiffe_id"] == old.spiffe_id]
    assert [(r["method"], r["actor"], r["details"]) for r in denied] == [
        ("BatchNewX509SVID", old.spiffe_id, {"serial": _serial(old)}),
        ("SyncAuthorized", old.spiffe_id, {"serial": _serial(old)}),
        ("RenewAgent", old.spiffe_id, {"serial": _serial(old)}),
    ]
    assert all(STALE in r["reason"] for r in denied)
    logged = server.log_text()
    assert "agent svid refused" in logged and "agent svid promoted" in logged
    pem = old.chain[0].public_bytes(serialization.Encoding.PEM).decode().splitlines()[1]
    assert pem not in logged  # the certificate itself is never logged


async def test_second_renewal_before_first_use_replaces_the_pending_svid(server: ServerProc) -> None:
    current, entry_id, roots = await _attested_with_entry(server)
    lost = await _renew(server, current, roots)  # e.g. the agent crashed before saving it
    again = await _renew(server, current, roots)
    assert await _mint(server, lost, roots, entry_id) is Status.PERMISSION_DENIED
    assert await _mint(server, current, roots, entry_id) is Status.OK  # the current one was kept
    assert _stored(server, current) == _serial(current)
    assert await _mint(server, again, roots, entry_id) is Status.OK
    assert await _mint(server, current, roots, entry_id) is Status.PERMISSION_DENIED
    assert await _mint(server, lost, roots, entry_id) is Status.PERMISSION_DENIED


async def test_renewal_authenticated_with_the_pending_svid_promotes_it_first(server: ServerProc) -> None:
    first, entry_id, roots = await _attested_with_entry(server)
    second = await _renew(server, first, roots)
    third = await _renew(server, second, roots)  # promotes second, then third is pending
    assert _stored(server, first) == _serial(second)
    assert await _mint(server, first, roots, entry_id) is Status.PERMISSION_DENIED
    assert await _mint(server, second, roots, entry_id) is Status.OK
    assert await _mint(server, third, roots, entry_id) is Status.OK
    assert await _mint(server, second, roots, entry_id) is Status.PERMISSION_DENIED


async def test_sync_stream_opened_with_a_superseded_svid_ends_without_an_error(server: ServerProc) -> None:
    """Not PERMISSION_DENIED (the agent takes that for eviction): the stream just ends at its next update."""
    old, entry_id, roots = await _attested_with_entry(server)
    async with agent_channel(server, old, roots) as stub, stub.SyncAuthorized.open() as stream:
        await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
        full = await asyncio.wait_for(stream.recv_message(), 20)
        assert full is not None and full.full and [e.id for e in full.entries] == [entry_id]
        new = await _renew(server, old, roots)  # renewal is a change: the stream (still valid) gets an update
        assert await _mint(server, new, roots, entry_id) is Status.OK  # promotes the new SVID
        await asyncio.to_thread(server.cli, "entry", "create", "--parent-id", old.spiffe_id,
                                "--spiffe-id", f"{TD}/later", "--selector", "unix:uid:1000")
        while (update := await asyncio.wait_for(stream.recv_message(), 20)) is not None:
            assert f"{TD}/later" not in [e.spiffe_id for e in update.entries]  # nothing after the supersession
        await stream.recv_trailing_metadata()  # OK: raises on any error status
    assert "sync stream ended: its agent svid was superseded" in server.log_text()


@pytest.fixture
def x509pop_server(tmp_path: Path) -> Iterator[tuple[ServerProc, CA]]:
    node_ca = CA.create("nodes.test")
    bundle = tmp_path / "node-ca.pem"
    bundle.write_bytes(node_ca.cert.public_bytes(serialization.Encoding.PEM))
    with ServerProc.start(config_text=f'[node_attestors.x509pop]\nca_bundle_path = "{bundle}"\n') as srv:
        yield srv, node_ca


async def test_reattestation_sets_current_and_clears_pending(x509pop_server: tuple[ServerProc, CA]) -> None:
    srv, node_ca = x509pop_server
    node = node_ca.issue_svid("spiffe://nodes.test/node", subject=x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "node-1")]))

    async def attest_node(n: Issued) -> TestAgent:
        async def answer(nonce: bytes) -> bytes:
            return x509pop_respond(nonce, n.key)

        return await attest(srv, "x509pop", n.chain_der(), answer)

    first = await attest_node(node)
    roots = server_roots(srv)
    entry_id = str(srv.cli_json("entry", "create", "--parent-id", first.spiffe_id, "--spiffe-id", f"{TD}/web",
                                "--selector", "unix:uid:1000")["id"])
    pending = await _renew(srv, first, roots)
    again = await attest_node(node)
    assert again.spiffe_id == first.spiffe_id and _stored(srv, again) == _serial(again)
    assert await _mint(srv, pending, roots, entry_id) is Status.PERMISSION_DENIED
    assert await _mint(srv, first, roots, entry_id) is Status.PERMISSION_DENIED
    assert await _mint(srv, again, roots, entry_id) is Status.OK
