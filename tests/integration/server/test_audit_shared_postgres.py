"""Two real spiffe-server processes on one PostgreSQL schema append to one audit chain without losing a record.

Both servers append at once: refused attestations (deny records) and join-token creations
(admin records), 60 per server in flight together. Every request must succeed or be refused
for its own reason (never INTERNAL for a lost chain race), every record must be stored, and
the chain must verify.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from tests.integration.server.agent_client import agent_channel, csr_for
from tests.support.server_proc import ServerProc

pytestmark = pytest.mark.postgres

PER_SERVER = 30  # of each kind: 60 concurrent appends per server
CSR = csr_for(ec.generate_private_key(ec.SECP256R1()))


async def _refused_attestation(stub: AgentAPIStub, n: int) -> Status:
    """AttestAgent with a made-up join token on a shared channel: the refusal's status."""
    try:
        await stub.AttestAgent([agent_pb2.AttestAgentRequest(params=agent_pb2.AttestParams(
            attestation_type="join_token", payload=f"no-such-token-{n}".encode(), csr=CSR))])
    except GRPCError as err:
        return err.status
    raise AssertionError("a made-up join token was accepted")


async def _load(srv: ServerProc) -> tuple[list[Status], int]:
    """PER_SERVER refused attestations and PER_SERVER token creations on ``srv``, all in flight at once."""
    channel = Channel(path=str(srv.socket_path))
    try:
        async with agent_channel(srv) as stub:
            api = AdminAPIStub(channel)
            refusals = [_refused_attestation(stub, n) for n in range(PER_SERVER)]
            tokens = [api.CreateJoinToken(admin_pb2.CreateJoinTokenRequest(ttl=60)) for _ in range(PER_SERVER)]
            results = await asyncio.gather(*refusals, *tokens)
    finally:
        channel.close()
    return list(results[:PER_SERVER]), sum(1 for t in results[PER_SERVER:] if t.value)  # type: ignore[union-attr]


def _records(srv: ServerProc) -> list[dict[str, Any]]:
    return list(srv.cli_json("audit", "show")["records"])


async def test_two_servers_appending_at_once_lose_no_audit_record(pg_schema: str) -> None:
    with ServerProc.start(extra_args=["--database", pg_schema]) as a:
        b = ServerProc.start(extra_args=["--database", pg_schema], data_dir=a.data_dir,
                             socket_path=a.data_dir.parent / "b.sock")
        try:
            (refused_a, tokens_a), (refused_b, tokens_b) = await asyncio.gather(_load(a), _load(b))
            assert Status.INTERNAL not in refused_a + refused_b
            assert tokens_a == tokens_b == PER_SERVER
            records = await asyncio.to_thread(_records, a)
            denies = [r for r in records if r["method"] == "AttestAgent" and r["decision"] == "deny"]
            created = [r for r in records if r["method"] == "CreateJoinToken"]
            assert len(denies) == len(created) == 2 * PER_SERVER
            assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
            verified = json.loads((await asyncio.to_thread(b.cli, "audit", "verify", "--output", "json")).stdout)
            assert verified == {"ok": True, "count": len(records)}
            assert "AUDIT WRITE FAILED" not in a.log_text() + b.log_text()
        finally:
            b.stop()
