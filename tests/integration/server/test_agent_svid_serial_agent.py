"""A real spiffe-agent renews its SVID against a real spiffe-server; its old SVID, copied off the node, is refused.

Agent SVIDs live 40 s (NotBefore is backdated 10 s), so the agent renews at its jittered
half-life, 12-23 s after attesting, and the old SVID stays unexpired for 17 s or more: long
enough to show that it is refused for its serial (PERMISSION_DENIED), not for its age (an
expired one would be UNAUTHENTICATED).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_server.revocation import serial_hex
from tests.integration.server.agent_client import TestAgent, agent_channel, csr_for, server_roots
from tests.support.agent_proc import AGENT, AgentProc
from tests.support.server_proc import ServerProc

pytestmark = pytest.mark.slow

TD = "spiffe://example.org"
UID_SELECTOR = f"unix:uid:{os.geteuid()}"
WAIT_S = 60.0


def _wait_for(predicate: Callable[[], bool], what: str, *logs: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n" + "\n".join(log()[-4000:] for log in logs))


def _fetch_ids(agent: AgentProc) -> list[str]:
    """The SPIFFE IDs a workload (this test process's uid) gets from the agent's Workload API."""
    out = subprocess.run([*AGENT, "api", "fetch", "x509", "--output", "json", "--socket-path", str(agent.socket_path)],
                         capture_output=True, text=True, check=False, timeout=60)
    if out.returncode != 0:
        return []
    return sorted(svid["spiffe_id"] for svid in json.loads(out.stdout))


def _copy_off_the_node(agent: AgentProc) -> tuple[list[x509.Certificate], ec.EllipticCurvePrivateKey]:
    """What a thief copies from the agent's data dir: its SVID chain and key (re-read until they match)."""
    data = agent.root / "data"
    for _ in range(10):
        chain = x509.load_pem_x509_certificates((data / "agent-svid.pem").read_bytes())
        key = serialization.load_pem_private_key((data / "agent-key.pem").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        if key.public_key() == chain[0].public_key():
            return chain, key
        time.sleep(0.2)  # caught the agent between writing its new key and its new SVID
    raise AssertionError("agent svid and key never matched")


@pytest.fixture
def running() -> Iterator[tuple[ServerProc, AgentProc, str]]:
    with ServerProc.start(config_text='default_x509_svid_ttl = "40s"\n') as srv, AgentProc.start(srv, "a1") as agent:
        entry_id = str(srv.cli_json("entry", "create", "--parent-id", agent.agent_id, "--spiffe-id",
                                    f"{TD}/workload", "--selector", UID_SELECTOR)["id"])
        agent.wait_ready()
        yield srv, agent, entry_id


async def test_agent_keeps_working_after_renewal_while_its_old_svid_is_refused(
    running: tuple[ServerProc, AgentProc, str],
) -> None:
    srv, agent, entry_id = running
    data = agent.root / "data"
    chain, key = _copy_off_the_node(agent)
    stolen = TestAgent(agent.agent_id, chain, key, agent_pb2.AttestResult())
    old = serial_hex(chain[0].serial_number)
    _wait_for(lambda: _fetch_ids(agent) == [f"{TD}/workload"], "a workload svid", agent.log_text)

    def stored() -> str:
        return serial_hex(x509.load_pem_x509_certificates((data / "agent-svid.pem").read_bytes())[0].serial_number)

    def server_serial() -> str:
        return str(srv.cli_json("agent", "show", "--spiffe-id", agent.agent_id)["serial"])

    _wait_for(lambda: stored() != old, "the agent to renew its svid", agent.log_text)
    new = stored()
    # The agent reconnects with its new SVID at once; its first call promotes it on the server.
    _wait_for(lambda: server_serial() != old, "the server to promote the renewed svid", srv.log_text)
    assert server_serial() in (new, stored())  # (a second renewal may already have happened)

    csr = csr_for(ec.generate_private_key(ec.SECP256R1()), f"{TD}/workload")
    async with agent_channel(srv, stolen, server_roots(srv)) as stub:
        with pytest.raises(GRPCError) as refused:
            await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(
                params=[agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr)]))
    assert refused.value.status is Status.PERMISSION_DENIED
    assert refused.value.message is not None and "expected serial number" in refused.value.message

    # The agent itself is untouched: still running, not evicted, still syncing and serving workloads.
    srv.cli("entry", "create", "--parent-id", agent.agent_id, "--spiffe-id", f"{TD}/after-renewal",
            "--selector", UID_SELECTOR)
    _wait_for(lambda: _fetch_ids(agent) == [f"{TD}/after-renewal", f"{TD}/workload"],
              "a workload to get the entry created after the renewal", agent.log_text)
    assert agent.proc is not None and agent.proc.poll() is None
    assert "evicted or banned" not in agent.log_text()
    assert agent.healthcheck().returncode == 0
    logged = srv.log_text()
    assert "agent svid promoted" in logged and "agent svid refused" in logged
