"""Agent API of a real spiffe-server process, driven by a test agent over TLS / mTLS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_py._x509pop import x509pop_respond
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.nodeattest.join_token import join_token_agent_id
from tests.integration.server.agent_client import (
    TestAgent,
    agent_channel,
    attest,
    client_context,
    csr_for,
    server_roots,
)
from tests.support.ca import CA, Issued
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"


def _token(srv: ServerProc, *args: str) -> str:
    return str(srv.cli_json("token", "generate", *args)["value"])


def _entry(srv: ServerProc, spiffe_id: str, parent: str, *extra: str) -> str:
    return str(srv.cli_json("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", parent,
                            "--selector", "unix:uid:1000", *extra)["id"])


async def _code(coro: object) -> Status:
    with pytest.raises(GRPCError) as exc:
        await coro  # type: ignore[misc]
    return exc.value.status


def _chains_to(chain: list[x509.Certificate], roots_pem: str) -> bool:
    from cryptography.x509.verification import PolicyBuilder, Store
    roots = x509.load_pem_x509_certificates(roots_pem.encode())
    verifier = PolicyBuilder().store(Store(roots)).build_client_verifier()
    verifier.verify(chain[0], chain[1:])
    return True


async def test_join_token_attests_once_only(server: ServerProc) -> None:
    token = _token(server)
    agent = await attest(server, "join_token", token.encode())
    assert agent.spiffe_id == str(join_token_agent_id(TrustDomain.parse("example.org"), token))
    assert token not in agent.spiffe_id
    assert agent.result.can_reattest is False
    assert _chains_to(agent.chain, server_roots(server))
    assert [x509.load_der_x509_certificate(c) for c in agent.result.bundle.x509_authorities]
    assert await _code(attest(server, "join_token", token.encode())) is Status.PERMISSION_DENIED
    listed = server.cli_json("agent", "show", "--spiffe-id", agent.spiffe_id)
    assert listed["attestation_type"] == "join_token" and listed["banned"] is False


async def test_expired_and_malformed_tokens_refused(server: ServerProc) -> None:
    token = _token(server, "--ttl", "1")
    time.sleep(2)  # let the token expire (not a timing assertion)
    assert await _code(attest(server, "join_token", token.encode())) is Status.PERMISSION_DENIED
    assert await _code(attest(server, "join_token", b"no such token")) is Status.PERMISSION_DENIED
    assert await _code(attest(server, "tpm", b"x")) is Status.INVALID_ARGUMENT
    assert server.cli_json("agent", "count") == {"count": 0}


async def test_banned_and_evicted_agents_refused(server: ServerProc) -> None:
    banned = await attest(server, "join_token", _token(server).encode())
    evicted = await attest(server, "join_token", _token(server).encode())
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(server, banned) as stub:
        renewed = await stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(key)))
        assert renewed.svid_chain
    server.cli("agent", "ban", "--spiffe-id", banned.spiffe_id)
    server.cli("agent", "evict", "--spiffe-id", evicted.spiffe_id)
    for agent in (banned, evicted):
        async with agent_channel(server, agent) as stub:
            code = await _code(stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=csr_for(key))))
            assert code is Status.PERMISSION_DENIED
    assert server.cli_json("agent", "show", "--spiffe-id", banned.spiffe_id)["banned"] is True
    assert server.cli_json("agent", "count") == {"count": 1}


async def test_renew_without_a_request_message_is_invalid_argument(server: ServerProc) -> None:
    """A stream ended before its one message is "request: missing", not an empty CSR."""
    agent = await attest(server, "join_token", _token(server).encode())
    async with agent_channel(server, agent) as stub:
        renew = stub.RenewAgent  # grpclib's unary client refuses to end without a message; a raw client need not
        async with renew.channel.request(renew.name, Cardinality.STREAM_UNARY, renew.request_type,
                                         renew.reply_type) as stream:
            await stream.send_request(end=True)
            with pytest.raises(GRPCError) as info:
                await stream.recv_message()
    assert info.value.status is Status.INVALID_ARGUMENT
    assert info.value.message == "request: missing"


async def test_call_without_client_certificate_is_refused(server: ServerProc) -> None:
    async with agent_channel(server) as stub:
        code = await _code(stub.RenewAgent(agent_pb2.RenewAgentRequest(csr=b"")))
    assert code is Status.UNAUTHENTICATED


async def test_batch_new_x509_svid_authorizes_each_entry(server: ServerProc) -> None:
    agent = await attest(server, "join_token", _token(server).encode())
    other = await attest(server, "join_token", _token(server).encode())
    mine = _entry(server, f"{TD}/web", agent.spiffe_id)
    child = _entry(server, f"{TD}/web/child", f"{TD}/web")
    theirs = _entry(server, f"{TD}/db", other.spiffe_id)
    key = ec.generate_private_key(ec.SECP256R1())
    params = [
        agent_pb2.NewX509SVIDParams(entry_id=mine, csr=csr_for(key, f"{TD}/web")),
        agent_pb2.NewX509SVIDParams(entry_id=child, csr=csr_for(key)),
        agent_pb2.NewX509SVIDParams(entry_id=theirs, csr=csr_for(key, f"{TD}/db")),
        agent_pb2.NewX509SVIDParams(entry_id=mine, csr=csr_for(key, f"{TD}/other")),
        agent_pb2.NewX509SVIDParams(entry_id=mine, csr=b"junk"),
    ]
    async with agent_channel(server, agent) as stub:
        resp = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=params))
        too_many = agent_pb2.BatchNewX509SVIDRequest(params=[params[0]] * 501)
        assert await _code(stub.BatchNewX509SVID(too_many)) is Status.INVALID_ARGUMENT
    codes = [Status(r.status_code) for r in resp.results]
    assert codes == [Status.OK, Status.OK, Status.PERMISSION_DENIED, Status.INVALID_ARGUMENT, Status.INVALID_ARGUMENT]
    roots = server_roots(server)
    for result in resp.results[:2]:
        assert _chains_to([x509.load_der_x509_certificate(c) for c in result.cert_chain], roots)
    assert "not authorized" in resp.results[2].status_message


async def test_new_jwt_svid_outside_subtree_denied(server: ServerProc) -> None:
    agent = await attest(server, "join_token", _token(server).encode())
    mine = _entry(server, f"{TD}/web", agent.spiffe_id, "--jwt-claim", "tier=gold")
    theirs = _entry(server, f"{TD}/db", f"{TD}/spire/agent/join_token/someone-else")
    async with agent_channel(server, agent) as stub:
        ok = await stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=mine, audience=["db"]))
        assert ok.token.count(".") == 2 and ok.expires_at > ok.issued_at
        code = await _code(stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=theirs, audience=["db"])))
        assert code is Status.PERMISSION_DENIED
        code = await _code(stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=mine, audience=[])))
        assert code is Status.INVALID_ARGUMENT


async def test_sync_authorized_pushes_changes_and_ends_on_ban(server: ServerProc) -> None:
    agent = await attest(server, "join_token", _token(server, "--spiffe-id", f"{TD}/node/alias").encode())
    first = _entry(server, f"{TD}/web", agent.spiffe_id)
    via_alias = _entry(server, f"{TD}/via-alias", f"{TD}/node/alias")
    _entry(server, f"{TD}/not-mine", f"{TD}/spire/agent/join_token/other")
    async with agent_channel(server, agent) as stub, stub.SyncAuthorized.open() as stream:
        await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
        full = await asyncio.wait_for(stream.recv_message(), 20)
        assert full is not None and full.full
        ids = {e.id for e in full.entries}
        assert {first, via_alias} <= ids and len(ids) == 3  # + the join-token alias entry itself
        assert full.bundle.x509_authorities
        added = await asyncio.to_thread(_entry, server, f"{TD}/later", agent.spiffe_id)
        update = await asyncio.wait_for(stream.recv_message(), 20)
        assert update is not None and not update.full and [e.id for e in update.entries] == [added]
        await asyncio.to_thread(server.cli, "entry", "delete", "--entry-id", first)
        update = await asyncio.wait_for(stream.recv_message(), 20)
        assert update is not None and list(update.removed_entry_ids) == [first]
        await asyncio.to_thread(server.cli, "agent", "ban", "--spiffe-id", agent.spiffe_id)
        with pytest.raises(GRPCError) as exc:
            assert await asyncio.wait_for(stream.recv_message(), 20) is None
            await stream.recv_trailing_metadata()
        assert exc.value.status is Status.PERMISSION_DENIED


async def _first_sync(stream: Any) -> set[str]:
    """Request SyncAuthorized on ``stream``; the entry IDs of its full first message."""
    await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
    full = await asyncio.wait_for(stream.recv_message(), 20)
    assert full is not None and full.full
    return {e.id for e in full.entries}


async def test_reparented_subtree_leaves_the_old_agent_and_reaches_the_new(server: ServerProc) -> None:
    """Moving an entry to another agent moves its subtree: the old agent's stream drops both, its next
    signing batch is refused for them, and the new agent's stream receives both."""
    old = await attest(server, "join_token", _token(server).encode())
    new = await attest(server, "join_token", _token(server).encode())
    parent = _entry(server, f"{TD}/web", old.spiffe_id)
    child = _entry(server, f"{TD}/web/child", f"{TD}/web")
    async with agent_channel(server, old) as old_stub, agent_channel(server, new) as new_stub, \
            old_stub.SyncAuthorized.open() as old_stream, new_stub.SyncAuthorized.open() as new_stream:
        try:
            assert await _first_sync(old_stream) == {parent, child}
            assert await _first_sync(new_stream) == set()
            await asyncio.to_thread(server.cli, "entry", "update", "--entry-id", parent, "--spiffe-id", f"{TD}/web",
                                    "--parent-id", new.spiffe_id, "--selector", "unix:uid:1000")
            removed = await asyncio.wait_for(old_stream.recv_message(), 20)
            assert removed is not None and set(removed.removed_entry_ids) == {parent, child}
            received: set[str] = set()
            while received != {parent, child}:
                msg = await asyncio.wait_for(new_stream.recv_message(), 20)
                assert msg is not None
                received |= {e.id for e in msg.entries}
            key = ec.generate_private_key(ec.SECP256R1())
            batch = agent_pb2.BatchNewX509SVIDRequest(params=[
                agent_pb2.NewX509SVIDParams(entry_id=child, csr=csr_for(key))])
            resp = await old_stub.BatchNewX509SVID(batch)
            assert [Status(r.status_code) for r in resp.results] == [Status.PERMISSION_DENIED]
            resp = await new_stub.BatchNewX509SVID(batch)
            assert [Status(r.status_code) for r in resp.results] == [Status.OK]
        finally:
            await old_stream.cancel()
            await new_stream.cancel()


@pytest.fixture
def x509pop_server(tmp_path: Path) -> Iterator[tuple[ServerProc, CA]]:
    node_ca = CA.create("nodes.test")
    bundle = tmp_path / "node-ca.pem"
    bundle.write_bytes(node_ca.cert.public_bytes(serialization.Encoding.PEM))
    config = f'[node_attestors.x509pop]\nca_bundle_path = "{bundle}"\n'
    with ServerProc.start(config_text=config) as srv:
        yield srv, node_ca


def _node(node_ca: CA, cn: str) -> Issued:
    return node_ca.issue_svid("spiffe://nodes.test/node", subject=x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, cn)]))


async def _attest_x509pop(srv: ServerProc, node: Issued) -> TestAgent:
    async def answer(nonce: bytes) -> bytes:
        return x509pop_respond(nonce, node.key)  # type: ignore[arg-type]

    return await attest(srv, "x509pop", node.chain_der(), answer)


async def test_x509pop_reattest_and_node_alias(x509pop_server: tuple[ServerProc, CA]) -> None:
    srv, node_ca = x509pop_server
    srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/cluster/a", "--node",
                 "--selector", "x509pop:subject:cn:node-1")
    via_alias = _entry(srv, f"{TD}/svc", f"{TD}/cluster/a")
    node1 = _node(node_ca, "node-1")
    agent = await _attest_x509pop(srv, node1)
    assert agent.spiffe_id.startswith(f"{TD}/spire/agent/x509pop/") and agent.result.can_reattest
    again = await _attest_x509pop(srv, node1)   # re-attestation: same ID, record updated in place
    assert again.spiffe_id == agent.spiffe_id and again.chain[0].serial_number != agent.chain[0].serial_number
    other = await _attest_x509pop(srv, _node(node_ca, "node-2"))
    assert srv.cli_json("agent", "count") == {"count": 2}
    key = ec.generate_private_key(ec.SECP256R1())
    req = agent_pb2.BatchNewX509SVIDRequest(params=[agent_pb2.NewX509SVIDParams(entry_id=via_alias, csr=csr_for(key))])
    async with agent_channel(srv, again) as stub:
        assert (await stub.BatchNewX509SVID(req)).results[0].status_code == Status.OK.value
    async with agent_channel(srv, other) as stub:
        assert (await stub.BatchNewX509SVID(req)).results[0].status_code == Status.PERMISSION_DENIED.value
    selectors = srv.cli_json("agent", "show", "--spiffe-id", agent.spiffe_id)["selectors"]
    assert "x509pop:subject:cn:node-1" in selectors
    srv.cli("agent", "ban", "--spiffe-id", agent.spiffe_id)
    assert await _code(_attest_x509pop(srv, node1)) is Status.PERMISSION_DENIED


async def test_x509pop_wrong_key_refused(x509pop_server: tuple[ServerProc, CA]) -> None:
    srv, node_ca = x509pop_server
    node = _node(node_ca, "node-1")
    impostor = Issued(node.chain, ec.generate_private_key(ec.SECP256R1()))
    assert await _code(_attest_x509pop(srv, impostor)) is Status.PERMISSION_DENIED
    stranger = CA.create("nodes.test").issue_svid("spiffe://nodes.test/n")
    assert await _code(_attest_x509pop(srv, stranger)) is Status.PERMISSION_DENIED
    assert srv.cli_json("agent", "count") == {"count": 0}


async def test_admin_api_over_mtls_needs_admin_entry(server: ServerProc, tmp_path: Path) -> None:
    _entry(server, f"{TD}/ops", f"{TD}/spire/agent/join_token/x", "--admin")
    roots = server_roots(server)
    results = {}
    for name in ("ops", "nobody"):
        out = tmp_path / name
        server.cli("x509", "mint", "--spiffe-id", f"{TD}/{name}", "--write", str(out))
        chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
        key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
        ident = TestAgent(f"{TD}/{name}", chain, key, agent_pb2.AttestResult())  # type: ignore[arg-type]
        from grpclib.client import Channel
        channel = Channel(*server.address, ssl=client_context(roots, ident))
        try:
            results[name] = await AdminAPIStub(channel).CountEntries(admin_pb2.CountRequest())
        except GRPCError as err:
            results[name] = err.status
        finally:
            channel.close()
    assert results["ops"].count == 1
    assert results["nobody"] is Status.PERMISSION_DENIED
