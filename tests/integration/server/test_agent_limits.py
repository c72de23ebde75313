"""Per-agent signing and RevokeOwn limits, and the admins' reserve in the revocation list (real server).

The attack: a compromised agent mints as fast as the server signs, then revokes what it minted
in chunks until the trust domain's revocation list is full, so admins can no longer revoke or
quarantine anything.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from tests.integration.server.agent_client import agent_channel, attest, csr_for
from tests.integration.server.revocation_support import new_x509, serial_of
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
LIMITS = """
[agent_limits]
sign_burst = 500
sign_rate = 0.01
revoke_burst = 3
revoke_rate = 0.01
revocation_share = 2
"""


@pytest.fixture(scope="module")
def limited() -> Iterator[ServerProc]:
    """A server with tight per-agent limits."""
    with ServerProc.start(config_text=LIMITS) as srv:
        yield srv


async def _agent_with_entry(srv: ServerProc, name: str) -> tuple[object, str]:
    agent = await attest(srv, "join_token", str(srv.cli_json("token", "generate")["value"]).encode())
    entry = srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/{name}", "--parent-id", agent.spiffe_id,
                         "--selector", "unix:uid:1000")
    return agent, str(entry["id"])


async def test_agent_over_its_signing_rate_gets_resource_exhausted(limited: ServerProc) -> None:
    agent, entry_id = await _agent_with_entry(limited, "minter")
    csr = csr_for(ec.generate_private_key(ec.SECP256R1()), f"{TD}/minter")
    batch = agent_pb2.BatchNewX509SVIDRequest(params=[agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr)] * 500)
    async with agent_channel(limited, agent) as stub:  # type: ignore[arg-type]
        resp = await stub.BatchNewX509SVID(batch)  # the whole burst: a full sync is served
        assert [r.status_code for r in resp.results] == [0] * 500
        with pytest.raises(GRPCError) as exc:
            await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(params=batch.params[:1]))
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
        assert exc.value.message is not None and "signing rate exceeded" in exc.value.message
        assert "retry in" in exc.value.message
        with pytest.raises(GRPCError) as exc:
            await stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=["db"]))
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
    other, other_entry = await _agent_with_entry(limited, "bystander")  # per agent: others keep signing
    async with agent_channel(limited, other) as stub:  # type: ignore[arg-type]
        assert (await stub.NewJWTSVID(agent_pb2.NewJWTSVIDRequest(entry_id=other_entry, audience=["db"]))).token


async def test_admin_revocations_and_quarantine_succeed_when_agents_filled_their_share(limited: ServerProc) -> None:
    agent, entry_id = await _agent_with_entry(limited, "filler")
    async with agent_channel(limited, agent) as stub:  # type: ignore[arg-type]
        serials = [serial_of(await new_x509(stub, entry_id, f"{TD}/filler")) for _ in range(4)]
        assert (await stub.RevokeOwn(agent_pb2.RevokeOwnRequest(x509_serials=serials[:2]))).revoked == 2
        with pytest.raises(GRPCError) as exc:  # the agents' share (2) is used up
            await stub.RevokeOwn(agent_pb2.RevokeOwnRequest(x509_serials=serials[2:3]))
        assert exc.value.status is Status.RESOURCE_EXHAUSTED
        assert exc.value.message is not None and "reserved for admins" in exc.value.message
        with pytest.raises(GRPCError) as exc:  # and its RevokeOwn rate (3 at once) is spent too
            await stub.RevokeOwn(agent_pb2.RevokeOwnRequest(x509_serials=serials[3:]))
        assert exc.value.status is Status.RESOURCE_EXHAUSTED and "RevokeOwn rate" in (exc.value.message or "")
    out = limited.cli_json("revoke", "svid", "--serial", serials[2], "--reason", "admin")
    assert [r["value"] for r in out["revocations"]] == [serials[2]]
    quarantined = limited.cli_json("entry", "quarantine", "--entry-id", entry_id, "--reason", "noisy")
    assert quarantined["quarantined"] is True
    listed = {r["value"] for r in limited.cli_json("revocation", "list")["revocations"]}
    assert set(serials) <= listed  # the quarantine revoked the last one too
