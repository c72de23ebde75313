"""mTLS callers lose their rights the moment their SVID is revoked or their entry quarantined (real server).

The attack: an admin (or agent) SVID leaks; the operator revokes it or quarantines the entry,
and the holder must not keep calling the Admin/Agent API on the same connection or a new one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, client_context, server_roots
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"


def _identity(srv: ServerProc, name: str, out: Path) -> TestAgent:
    """An X.509-SVID for ``TD/name`` minted with the CLI, as a client identity."""
    srv.cli("x509", "mint", "--spiffe-id", f"{TD}/{name}", "--write", str(out))
    chain = x509.load_pem_x509_certificates((out / "svid.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    return TestAgent(f"{TD}/{name}", chain, key, agent_pb2.AttestResult())  # type: ignore[arg-type]


@asynccontextmanager
async def _admin(srv: ServerProc, ident: TestAgent) -> AsyncIterator[AdminAPIStub]:
    channel = Channel(*srv.address, ssl=client_context(server_roots(srv), ident))
    try:
        yield AdminAPIStub(channel)
    finally:
        channel.close()


async def _refused(stub: AdminAPIStub) -> GRPCError:
    with pytest.raises(GRPCError) as exc:
        await stub.CountEntries(admin_pb2.CountRequest())
    return exc.value


async def test_revoked_admin_svid_is_refused_on_the_next_call(server: ServerProc, tmp_path: Path) -> None:
    server.cli_json("entry", "create", "--spiffe-id", f"{TD}/ops", "--parent-id", f"{TD}/node",
                    "--selector", "unix:uid:0", "--admin")
    ops = _identity(server, "ops", tmp_path / "ops")
    async with _admin(server, ops) as stub:
        assert (await stub.CountEntries(admin_pb2.CountRequest())).count == 1
        server.cli_json("revoke", "svid", "--serial", f"{ops.chain[0].serial_number:x}", "--reason", "leaked")
        err = await _refused(stub)  # same connection: checked on every call, not at the handshake
    assert err.status is Status.PERMISSION_DENIED
    assert err.message is not None and "is revoked" in err.message
    async with _admin(server, ops) as stub:  # and on a new connection
        assert (await _refused(stub)).status is Status.PERMISSION_DENIED


async def test_quarantined_admin_entry_is_refused_on_the_next_call(server: ServerProc, tmp_path: Path) -> None:
    entry = server.cli_json("entry", "create", "--spiffe-id", f"{TD}/ops", "--parent-id", f"{TD}/node",
                            "--selector", "unix:uid:0", "--admin")
    ops = _identity(server, "ops", tmp_path / "ops")  # minted, not issued under the entry: only quarantine applies
    async with _admin(server, ops) as stub:
        assert (await stub.CountEntries(admin_pb2.CountRequest())).count == 1
        server.cli_json("entry", "quarantine", "--entry-id", entry["id"], "--reason", "compromised")
        err = await _refused(stub)
    assert err.status is Status.PERMISSION_DENIED
    assert err.message is not None and "quarantined" in err.message
    server.cli_json("entry", "update", "--entry-id", entry["id"], "--clear-quarantine")
    async with _admin(server, ops) as stub:  # cleared: the identity is an admin again
        assert (await stub.CountEntries(admin_pb2.CountRequest())).count == 1


async def test_revoked_agent_svid_is_refused_on_the_next_call(server: ServerProc) -> None:
    token = str(server.cli_json("token", "generate")["value"])
    agent = await attest(server, "join_token", token.encode())
    entry = server.cli_json("entry", "create", "--spiffe-id", f"{TD}/w", "--parent-id", agent.spiffe_id,
                            "--selector", "unix:uid:1000")
    request = agent_pb2.NewJWTSVIDRequest(entry_id=entry["id"], audience=["db"])
    async with agent_channel(server, agent) as stub:
        assert (await stub.NewJWTSVID(request)).token
        out = server.cli_json("revoke", "svid", "--serial", f"{agent.chain[0].serial_number:x}", "--reason", "stolen")
        assert [r["spiffe_id"] for r in out["revocations"]] == [agent.spiffe_id]
        with pytest.raises(GRPCError) as exc:
            await stub.NewJWTSVID(request)
    assert exc.value.status is Status.PERMISSION_DENIED
    assert exc.value.message is not None and "is revoked" in exc.value.message
