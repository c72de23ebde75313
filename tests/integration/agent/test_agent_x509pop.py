"""The agent's x509pop node attestation, end to end with real server and agent processes.

The agent proves possession of a node certificate's key, so it never needs an operator again:
when its SVID lapses while the server is down, it re-attests by itself once the server is back,
and a restart with a lapsed stored identity re-attests too (a join-token agent stays stuck).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from spiffe_py import _pem
from spiffe_py.workloadapi import WorkloadApiClient
from tests.support.agent_proc import AgentProc
from tests.support.ca import CA, Issued
from tests.support.server_proc import ServerProc

pytestmark = pytest.mark.slow

TD = "example.org"
SVID_TTL_S = 12  # agent and workload SVIDs: short, so one can lapse inside the test


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Issued, Path, Path, Path]]:
    """A node certificate from an external PKI; (issued, ca bundle, cert file, key file)."""
    node_ca = CA.create("nodes.test")
    issued = node_ca.issue_svid("spiffe://nodes.test/node", ttl=timedelta(days=1),
                                subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")]))
    ca_file, cert_file, key_file = tmp_path / "node-ca.pem", tmp_path / "node.pem", tmp_path / "node.key"
    ca_file.write_bytes(node_ca.cert.public_bytes(Encoding.PEM))
    cert_file.write_bytes(issued.chain_pem())
    key_file.write_bytes(issued.key_pem())
    key_file.chmod(0o600)
    yield issued, ca_file, cert_file, key_file


def _agent_svid(agent: AgentProc) -> x509.Certificate:
    return _pem.certificates_from_pem((agent.root / "data" / "agent-svid.pem").read_bytes())[0]


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _fetch_ok(agent: AgentProc, spiffe_id: str) -> bool:
    try:
        with WorkloadApiClient(agent.address, timeout=5) as client:
            svid = client.fetch_x509_svid()
    except Exception:
        return False
    return str(svid.spiffe_id) == spiffe_id


def test_x509pop_agent_attests_serves_and_reattests_after_its_svid_lapsed(
        node: tuple[Issued, Path, Path, Path]) -> None:
    issued, ca_file, cert_file, key_file = node
    fingerprint = issued.leaf.fingerprint(hashes.SHA1()).hex()
    agent_id = f"spiffe://{TD}/spire/agent/x509pop/{fingerprint}"
    config = (f'default_x509_svid_ttl = "{SVID_TTL_S}s"\n'
              f'[node_attestors.x509pop]\nca_bundle_path = "{ca_file}"\n')
    flags = ("--node-attestor", "x509pop", "--x509pop-cert", str(cert_file), "--x509pop-key", str(key_file))
    with ServerProc.start(trust_domain=TD, config_text=config) as srv, \
            AgentProc.start(srv, "xp", node_attestation=(flags, agent_id)) as agent:
        workload = f"spiffe://{TD}/xp-workload"
        srv.cli("entry", "create", "--spiffe-id", workload, "--parent-id", agent_id,
                "--selector", f"unix:uid:{os.geteuid()}")
        agent.wait_ready()
        _wait(lambda: _fetch_ok(agent, workload), 30, "the workload's SVID")
        shown = srv.cli_json("agent", "show", "--spiffe-id", agent_id)
        assert shown["attestation_type"] == "x509pop"
        assert "x509pop:subject:cn:node-1" in shown["selectors"]

        # The server is down for longer than the agent SVID lives: renewal becomes impossible.
        first = _agent_svid(agent)
        srv.stop()
        lapse = first.not_valid_after_utc.timestamp() - time.time() + 1
        time.sleep(max(lapse, 0))
        srv.launch()
        _wait(lambda: _agent_svid(agent).serial_number != first.serial_number
              and _agent_svid(agent).not_valid_after_utc.timestamp() > time.time(), 60, "re-attestation")
        assert agent.log_text().count("(x509pop)") >= 2, agent.log_text()[-2000:]
        _wait(lambda: _fetch_ok(agent, workload), 30, "a workload SVID after re-attestation")

        # A restart with a lapsed stored identity re-attests at start.
        agent.stop()
        stored = _agent_svid(agent)
        time.sleep(max(stored.not_valid_after_utc.timestamp() - time.time() + 1, 0))
        agent.launch()
        agent.wait_ready()
        assert _agent_svid(agent).serial_number != stored.serial_number
        _wait(lambda: _fetch_ok(agent, workload), 30, "a workload SVID after restart")
