"""Short-lived SVIDs with a real server: workload SVID rotation on an open stream, agent SVID renewal,
insecure bootstrap, and an untrusted server at bootstrap.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_py import _pem
from tests.integration.agent.conftest import TD, Env, running_env, wait_for, x509_stream
from tests.support.ca import CA

pytestmark = pytest.mark.slow

UID_SELECTOR = f"unix:uid:{os.geteuid()}"


@pytest.fixture(scope="module")
def short_env() -> Iterator[Env]:
    """Every SVID (agent and workload) lives 16 s; the agent bootstraps without a trust bundle."""
    with running_env(
        [("/rotating", UID_SELECTOR)],
        extra_args=("--insecure-bootstrap",),
        server_config='default_x509_svid_ttl = "16s"\n',
    ) as e:
        yield e


def _leaf_serial(der_chain: bytes) -> int:
    return _pem.certificates_from_der(der_chain)[0].serial_number


def test_insecure_bootstrap_is_logged_as_a_warning(short_env: Env) -> None:
    assert "insecure bootstrap" in short_env.dump()


async def test_workload_svid_rotates_on_open_stream(short_env: Env) -> None:
    """The agent re-mints at half-life and pushes the new SVID (WA-06); interval printed, not asserted."""
    async with x509_stream(short_env.socket_path) as stream:
        first = await asyncio.wait_for(stream.recv_message(), 60)
        started = time.monotonic()
        second = await asyncio.wait_for(stream.recv_message(), 60)
        print(f"rotated after {time.monotonic() - started:.1f}s")
    assert first.svids[0].spiffe_id == second.svids[0].spiffe_id == f"spiffe://{TD}/rotating"
    assert _leaf_serial(first.svids[0].x509_svid) != _leaf_serial(second.svids[0].x509_svid)
    assert first.svids[0].x509_svid_key != second.svids[0].x509_svid_key  # a fresh key per rotation


def test_agent_svid_renewed_and_sync_continues(short_env: Env) -> None:
    """RenewAgent at half-life replaces the stored SVID; the agent keeps syncing with the new one."""
    stored = short_env.root / "agent" / "agent-svid.pem"
    before = x509.load_pem_x509_certificates(stored.read_bytes())[0].serial_number
    wait_for(
        lambda: x509.load_pem_x509_certificates(stored.read_bytes())[0].serial_number != before, 60, "agent renewal"
    )
    short_env.create_entry(f"spiffe://{TD}/after-renewal", UID_SELECTOR)

    def arrived() -> bool:
        out = short_env.agent_cli("api", "fetch", "x509", "--output", "json", check=False)
        return "after-renewal" in out.stdout

    wait_for(arrived, 60, "entry created after renewal")


def test_evicted_agent_exits_and_forgets_its_identity(short_env: Env) -> None:
    """`revoke agent` evicts: the agent stops with an error and must attest again next time."""
    short_env.server_cli("revoke", "agent", "--spiffe-id", short_env.agent_id)
    assert short_env.agent is not None
    short_env.agent.wait(60)
    assert short_env.agent.returncode == 1
    assert "evicted or banned" in short_env.dump()
    assert not (short_env.root / "agent" / "agent-key.pem").exists()
    assert not short_env.socket_path.exists()


def test_untrusted_server_is_not_attested() -> None:
    """With trust anchors that do not match the server, the agent never attests and serves UNAVAILABLE (WE-13)."""
    stranger = CA.create("example.org").cert.public_bytes(Encoding.PEM).decode()
    with running_env([("/w", UID_SELECTOR)], bootstrap_pem=stranger, wait_ready=False) as e:
        wait_for(lambda: "SSLCertVerificationError" in e.dump(), 60, "tls verification failure in the agent log")
        out = e.agent_cli("api", "fetch", "x509", check=False)
        assert out.returncode == 1
        assert "UNAVAILABLE" in out.stderr
        assert not (e.root / "agent" / "agent-svid.pem").exists()
