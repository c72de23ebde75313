"""BatchNewX509SVID re-reads the caller and its entries on every call (issue 3 fast path keeps authz fresh)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, csr_for
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


async def _enrolled(srv: ServerProc) -> TestAgent:
    token = str(srv.cli_json("token", "generate")["value"])
    return await attest(srv, "join_token", token.encode())


def _entry(srv: ServerProc, spiffe_id: str, parent: str) -> str:
    return str(srv.cli_json("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", parent,
                            "--selector", "unix:uid:1000")["id"])


async def _batch(stub: AgentAPIStub, entry_id: str, key: ec.EllipticCurvePrivateKey,
                 uri: str | None = None) -> agent_pb2.X509SVIDResult:
    """Three items for one entry: all OK (three distinct certificates) or all refused alike."""
    item = agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(key, uri))
    response = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=[item] * 3))
    results: list[agent_pb2.X509SVIDResult] = list(response.results)
    assert len({r.status_code for r in results}) == 1
    assert len({bytes(r.cert_chain[0]) for r in results if r.cert_chain}) in (0, 3)
    return results[0]


async def _refused(stub: AgentAPIStub, entry_id: str, key: ec.EllipticCurvePrivateKey) -> Status:
    with pytest.raises(GRPCError) as exc:
        await _batch(stub, entry_id, key)
    return exc.value.status


async def test_signed_leaf_carries_the_entry_id_and_the_csr_key(server: ServerProc) -> None:
    """X5-01: the issued leaf names the entry's SPIFFE ID and certifies the CSR's key; no bundle root is sent."""
    agent = await _enrolled(server)
    entry = _entry(server, f"{TD}/fast/web", agent.spiffe_id)
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(server, agent) as stub:
        result = await _batch(stub, entry, key, f"{TD}/fast/web")
    assert Status(result.status_code) is Status.OK and len(result.cert_chain) == 1  # self-signed CA = bundle root
    leaf = x509.load_der_x509_certificate(result.cert_chain[0])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"{TD}/fast/web"]
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, ec.EllipticCurvePublicKey) and _spki(leaf_key) == _spki(key.public_key())


async def test_entry_changes_apply_to_the_next_batch(server: ServerProc) -> None:
    agent = await _enrolled(server)
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(server, agent) as stub:
        first = _entry(server, f"{TD}/fast/a", agent.spiffe_id)
        assert Status((await _batch(stub, first, key)).status_code) is Status.OK
        second = _entry(server, f"{TD}/fast/b", agent.spiffe_id)  # created after a call: usable at once
        assert Status((await _batch(stub, second, key)).status_code) is Status.OK
        server.cli("entry", "delete", "--entry-id", first)
        gone = await _batch(stub, first, key)
        assert Status(gone.status_code) is Status.PERMISSION_DENIED and "not authorized" in gone.status_message


async def test_ban_and_eviction_apply_to_the_next_batch(server: ServerProc) -> None:
    banned, evicted = await _enrolled(server), await _enrolled(server)
    key = ec.generate_private_key(ec.SECP256R1())
    entries = {a.spiffe_id: _entry(server, f"{TD}/fast/{n}", a.spiffe_id) for n, a in enumerate((banned, evicted))}
    async with agent_channel(server, banned) as banned_stub, agent_channel(server, evicted) as evicted_stub:
        for agent, stub in ((banned, banned_stub), (evicted, evicted_stub)):
            assert Status((await _batch(stub, entries[agent.spiffe_id], key)).status_code) is Status.OK
        server.cli("agent", "ban", "--spiffe-id", banned.spiffe_id)
        server.cli("agent", "evict", "--spiffe-id", evicted.spiffe_id)
        assert await _refused(banned_stub, entries[banned.spiffe_id], key) is Status.PERMISSION_DENIED
        assert await _refused(evicted_stub, entries[evicted.spiffe_id], key) is Status.PERMISSION_DENIED
