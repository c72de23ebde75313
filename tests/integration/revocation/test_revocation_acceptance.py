"""Issue 5 acceptance: revocation and task-bound credentials across real server + agent processes.

Order matters inside the module: ``revoke agent`` uses the last agent, taint runs last (it rotates the CA).
Times are printed, never asserted (figures come from benchmarks/bench_revocation.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from OpenSSL import SSL

from spiffe_py import _pem
from spiffe_py.errors import NoIdentityError
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import authorize_id, client_context
from spiffe_py.workloadapi import WorkloadApiClient
from tests.integration.agent.conftest import x509_stream
from tests.integration.client.conftest import StaticSource
from tests.integration.client.test_mtls_processes import open_socket
from tests.integration.revocation.conftest import TD, WORKLOAD_ID, Cluster, wait_until
from tests.support.agent_proc import AgentProc

pytestmark = pytest.mark.slow

T = TypeVar("T")

AUDIENCE = "revocation-test"
HERE = Path(__file__).parent
MTLS_SERVER = HERE.parents[1] / "integration" / "client" / "mtls_server.py"


def py_spiffe(agent: AgentProc) -> Any:
    """py-spiffe's WorkloadApiClient for ``agent``."""
    from spiffe import WorkloadApiClient as PySpiffeClient

    return PySpiffeClient(agent.address)


def validate_error(client: Any, token: str) -> str | None:
    """The error message py-spiffe's validate_jwt_svid raises, or None if the agent accepts the token."""
    try:
        client.validate_jwt_svid(token, AUDIENCE)
    except Exception as err:  # py-spiffe raises its own error types; the message is what we check
        return str(err)
    return None


def crl_serials(agent: AgentProc) -> set[int]:
    """Serials listed in the CRLs FetchX509Bundles returns at ``agent``."""
    with WorkloadApiClient(agent.address, timeout=30) as client:
        crls = client.fetch_x509_bundles().crls
    return {r.serial_number for crl in crls for r in crl}


def svid_serial(agent: AgentProc, spiffe_id: str = WORKLOAD_ID) -> int:
    """Serial of this process's current X.509-SVID for ``spiffe_id`` at ``agent``."""
    with WorkloadApiClient(agent.address, timeout=30) as client:
        svids = client.fetch_x509_context().svids
    return next(s for s in svids if str(s.spiffe_id) == spiffe_id).cert_chain[0].serial_number


def revocations(cluster: Cluster) -> list[dict[str, Any]]:
    """``spiffe-server revocation list --output json``."""
    result: list[dict[str, Any]] = cluster.server.cli_json("revocation", "list")["revocations"]
    return result


# ---- 1. JWT revocation ------------------------------------------------------------------------


def test_revoked_jti_fails_validate_at_every_agent(cluster: Cluster) -> None:
    """Acceptance 1: after `revoke svid --jti` ValidateJWTSVID (py-spiffe) fails at each of 3 agents."""
    agents = cluster.agents[:3]
    clients = [py_spiffe(a) for a in agents]
    times = []
    try:
        for trial in range(5):
            with WorkloadApiClient(agents[trial % 3].address, timeout=30) as own:
                jwt = own.fetch_jwt_svid(AUDIENCE)
            token, jti = jwt.token, str(jwt.claims["jti"])
            assert all(validate_error(c, token) is None for c in clients)
            start = time.monotonic()
            cluster.server.cli("revoke", "svid", f"--jti={jti}", "--reason", "acceptance 1")  # a jti may start with "-"
            wait_until(functools.partial(_refused_by_all, clients, token), "jti refused everywhere")
            times.append(time.monotonic() - start)
            for c in clients:
                assert "revoked" in str(validate_error(c, token))
    finally:
        for c in clients:
            c.close()
    listed = {r["value"]: r for r in revocations(cluster) if r["kind"] == "jwt"}
    assert jti in listed and listed[jti]["reason"] == "acceptance 1"
    print(f"jti revocation enforced at 3 agents after: {[f'{t:.3f}s' for t in times]}")


def _refused_by_all(clients: list[Any], token: str) -> bool:
    return all(validate_error(c, token) for c in clients)


# ---- 2. X.509 revocation ----------------------------------------------------------------------


@pytest.fixture
def mtls_server(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """mtls_server.py as a workload of agent0 that only accepts WORKLOAD_ID clients."""
    log = tmp_path / "mtls.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, str(MTLS_SERVER), cluster.agents[0].address, WORKLOAD_ID],
                                stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"mtls server did not start: {line!r} {log.read_text()}"
        yield int(line), log
    finally:
        proc.kill()
        proc.wait(30)


def mtls_hello(port: int, source: StaticSource) -> bytes:
    """Handshake with ``source``'s SVID and read the server's greeting (SSL.Error if refused)."""
    ctx = client_context(source, source, authorize_id(SpiffeId.parse(WORKLOAD_ID)))
    with open_socket(port) as sock:
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        conn.do_handshake()
        reply: bytes = conn.recv(1024)
        return reply


def current_source(agent: AgentProc) -> StaticSource:
    """This process's current SVID and bundles at ``agent``, frozen."""
    with WorkloadApiClient(agent.address, timeout=30) as client:
        ctx = client.fetch_x509_context()
    return StaticSource(next(s for s in ctx.svids if str(s.spiffe_id) == WORKLOAD_ID), ctx.bundles)


async def first_stream_change(
    agent: AgentProc, timeout: float, changed: Callable[[list[tuple[str, x509.Certificate]]], T | None]
) -> T:
    """On an open FetchX509SVID stream, the first non-None ``changed((SPIFFE ID, leaf) of every SVID)``."""
    async with x509_stream(agent.socket_path) as stream:
        while True:
            msg = await asyncio.wait_for(stream.recv_message(), timeout)
            assert msg is not None
            found = changed([(s.spiffe_id, _pem.certificates_from_der(s.x509_svid)[0]) for s in msg.svids])
            if found is not None:
                return found


async def next_serial_change(agent: AgentProc, old: int) -> int:
    """On an open FetchX509SVID stream, wait for WORKLOAD_ID's SVID to differ from ``old``."""

    def new_serial(leaves: list[tuple[str, x509.Certificate]]) -> int | None:
        serials = {spiffe_id: leaf.serial_number for spiffe_id, leaf in leaves}
        return serials[WORKLOAD_ID] if serials.get(WORKLOAD_ID, old) != old else None

    return await first_stream_change(agent, 30, new_serial)


def test_revoked_serial_is_in_the_crl_refused_by_mtls_and_reissued(
    cluster: Cluster, mtls_server: tuple[int, Path]
) -> None:
    """Acceptance 2: CRL lists the serial; a spiffe_py mTLS server refuses the cert; the stream gets a new SVID."""
    port, log = mtls_server
    agent = cluster.agents[0]
    old = current_source(agent)
    assert mtls_hello(port, old) == f"hello {WORKLOAD_ID}\n".encode()
    serial = old.svid.cert_chain[0].serial_number
    with WorkloadApiClient(agent.address, timeout=30) as c:
        assert serial not in {r.serial_number for crl in c.fetch_x509_bundles().crls for r in crl}

    async def revoke_and_watch() -> int:
        watcher = asyncio.create_task(next_serial_change(agent, serial))
        await asyncio.sleep(0.5)  # the stream's first message carries the old SVID
        await asyncio.to_thread(cluster.server.cli, "revoke", "svid", "--serial", f"{serial:x}")
        return await watcher

    start = time.monotonic()
    fresh = asyncio.run(revoke_and_watch())
    took = wait_until(lambda: serial in crl_serials(agent), "the CRL to list the serial")
    print(f"serial in CRL at the agent {time.monotonic() - start:.3f}s after the CLI started ({took:.3f}s polling)")
    assert fresh != serial
    assert fresh not in crl_serials(agent)  # the re-issued SVID is not revoked
    # the mTLS server follows its X509Source, whose CRLs now list the old serial
    wait_until(lambda: _refused(port, old), "the mTLS server to refuse the revoked cert")
    wait_until(lambda: "RevokedError" in log.read_text(), "the mTLS server to log why it refused")
    assert f"serial {serial:#x} is revoked" in log.read_text()
    assert mtls_hello(port, current_source(agent)) == f"hello {WORKLOAD_ID}\n".encode()


def _refused(port: int, source: StaticSource) -> bool:
    try:
        mtls_hello(port, source)
    except SSL.Error:
        return True
    return False


# ---- 3. revoke entry / revoke agent -----------------------------------------------------------


def test_revoke_entry_kills_every_outstanding_svid_of_the_entry(cluster: Cluster) -> None:
    """Acceptance 3a: every X.509 serial and jti issued under the entry is revoked; the entry stays."""
    agent = cluster.agents[1]
    task_id = f"spiffe://{TD}/entry-revoke"
    entry_id = cluster.create_entry(agent, task_id)
    wait_until(lambda: _has_identity(agent, task_id), "the new entry's SVID")
    serial = svid_serial(agent, task_id)
    with WorkloadApiClient(agent.address, timeout=30) as c:
        token = c.fetch_jwt_svid(AUDIENCE, SpiffeId.parse(task_id))
    out = cluster.server.cli_json("revoke", "entry", "--entry-id", entry_id, "--reason", "acceptance 3")
    revoked = {(r["kind"], r["value"]) for r in out["revocations"]}
    assert ("x509", f"{serial:x}") in revoked
    assert ("jwt", token.claims["jti"]) in revoked
    with py_spiffe(agent) as client:
        wait_until(lambda: validate_error(client, token.token) is not None, "the entry's jti to be refused")
        assert "revoked" in str(validate_error(client, token.token))
    wait_until(lambda: serial in crl_serials(agent), "the CRL to list the entry's serial")
    wait_until(lambda: svid_serial(agent, task_id) != serial, "a fresh SVID for the kept entry")
    assert cluster.server.cli_json("entry", "show", "--entry-id", entry_id)


def _has_identity(agent: AgentProc, spiffe_id: str) -> bool:
    with WorkloadApiClient(agent.address, timeout=30) as client:
        return any(str(s.spiffe_id) == spiffe_id for s in client.fetch_x509_context().svids)


def test_revoke_agent_cuts_it_off_and_revokes_its_workloads_svids(cluster: Cluster) -> None:
    """Acceptance 3b: the agent exits (evicted) and its workload's serial and jti are revoked everywhere."""
    victim, witness = cluster.agents[3], cluster.agents[0]
    serial = svid_serial(victim)
    with WorkloadApiClient(victim.address, timeout=30) as c:
        token = c.fetch_jwt_svid(AUDIENCE)
    cluster.server.cli("revoke", "agent", "--spiffe-id", victim.agent_id, "--reason", "acceptance 3")
    assert victim.proc is not None
    assert victim.proc.wait(60) != 0
    assert "evicted or banned" in victim.log_text()
    listed = {(r["kind"], r["value"]) for r in revocations(cluster)}
    assert ("x509", f"{serial:x}") in listed and ("jwt", token.claims["jti"]) in listed
    wait_until(lambda: serial in crl_serials(witness), "another agent's CRL to list the cut-off agent's SVID")
    with py_spiffe(witness) as client:
        assert "revoked" in str(validate_error(client, token.token))


# ---- 5. process-bound entries -----------------------------------------------------------------


def spawn_bound(agent: AgentProc, spiffe_id: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """A bound workload process and the SVID report it printed."""
    proc = subprocess.Popen([sys.executable, str(HERE / "bound_workload.py"), agent.address, spiffe_id, AUDIENCE],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "bound workload printed nothing"
    report: dict[str, str] = json.loads(line)
    return proc, report


def test_bound_processes_get_own_keys_and_exit_revokes_only_theirs(cluster: Cluster) -> None:
    """Acceptance 5: two processes, two keys; one exits -> its serial and jti are revoked, the other's are not."""
    agent = cluster.agents[2]
    bound_id = f"spiffe://{TD}/bound"
    cluster.create_entry(agent, bound_id, "--bind-to-process")
    wait_until(lambda: _entry_synced(agent, bound_id), "the bound entry to reach the agent")
    first, a = spawn_bound(agent, bound_id)
    second, b = spawn_bound(agent, bound_id)
    try:
        assert a["key"] != b["key"] and a["serial"] != b["serial"] and a["jti"] != b["jti"]
        assert first.stdin is not None
        start = time.monotonic()
        first.stdin.close()  # the first process exits
        first.wait(30)
        with py_spiffe(agent) as client:
            wait_until(lambda: validate_error(client, a["token"]) is not None, "the exited process's jti refused")
            assert "revoked" in str(validate_error(client, a["token"]))
            wait_until(lambda: int(a["serial"], 16) in crl_serials(agent), "the exited process's serial in the CRL")
            print(f"bound process exit -> jti refused and serial in CRL after {time.monotonic() - start:.3f}s")
            assert validate_error(client, b["token"]) is None
        assert int(b["serial"], 16) not in crl_serials(agent)
        assert second.poll() is None
        reasons = {r["value"]: r["reason"] for r in revocations(cluster)}
        assert reasons[a["serial"]] == "process exited" and reasons[a["jti"]] == "process exited"
        assert b["serial"] not in reasons and b["jti"] not in reasons
        exit_line = f"bound process exited; its svids are revoked: pid={first.pid} "
        wait_until(lambda: "server revoked" in agent.log_text(), "the agent to log the server's revocation")
        assert exit_line in agent.log_text() and a["serial"] in agent.log_text() and a["jti"] in agent.log_text()
        assert f"exited pid={first.pid} (reason 'process exited')" in agent.log_text()
    finally:
        for p in (first, second):
            if p.stdin is not None and not p.stdin.closed:
                p.stdin.close()
            p.wait(30)


def _entry_synced(agent: AgentProc, spiffe_id: str) -> bool:
    # the test process matches the bound entry too, so the entry shows in its own identities
    return _has_identity(agent, spiffe_id)


# ---- 6. expiring entries ----------------------------------------------------------------------


def test_expiring_entry_caps_svids_and_ends_at_expires_at(cluster: Cluster) -> None:
    """Acceptance 6: SVIDs fetched halfway expire by expires_at; after it the identity is gone (PERMISSION_DENIED)."""
    agent = cluster.agents[1]
    task_id = f"spiffe://{TD}/task"
    expires_at = int(time.time()) + 20
    cluster.create_entry(agent, task_id, "--expires-at", str(expires_at))
    time.sleep(max(0.0, expires_at - 10 - time.time()))
    with WorkloadApiClient(agent.address, timeout=30) as client:
        svid = next(s for s in client.fetch_x509_context().svids if str(s.spiffe_id) == task_id)
        jwt = client.fetch_jwt_svid(AUDIENCE, SpiffeId.parse(task_id))
    assert svid.cert_chain[0].not_valid_after_utc <= datetime.fromtimestamp(expires_at, UTC)
    assert int(jwt.claims["exp"]) <= expires_at
    time.sleep(max(0.0, expires_at - time.time()) + 0.5)
    with WorkloadApiClient(agent.address, timeout=30) as client:
        assert task_id not in {str(s.spiffe_id) for s in client.fetch_x509_context().svids}
        with pytest.raises(NoIdentityError, match="no identity issued"):
            client.fetch_jwt_svid(AUDIENCE, SpiffeId.parse(task_id))
    assert "entry has expired" not in agent.log_text()  # the agent never asked for a post-expiry SVID


# ---- 4. taint (last: it rotates the CA) -------------------------------------------------------


def _authorities(cluster: Cluster, action: str, authority_id: str = "") -> list[dict[str, Any]]:
    args = ["localauthority", "x509", action]
    if authority_id:
        args += ["--authority-id", authority_id]
    result: list[dict[str, Any]] = cluster.server.cli_json(*args)["authorities"]
    return result


def _aki(leaf: x509.Certificate) -> str:
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    return (aki or b"").hex()


async def _issuer_change(agent: AgentProc, old_aki: str) -> str:
    def new_aki(leaves: list[tuple[str, x509.Certificate]]) -> str | None:
        akis = {_aki(leaf) for _, leaf in leaves}
        return akis.pop() if old_aki not in akis else None

    return await first_stream_change(agent, 60, new_aki)


def test_taint_reissues_on_every_stream_and_revoke_removes_the_authority(cluster: Cluster) -> None:
    """Acceptance 4: every workload stream gets an SVID from the new authority; revoke drops the old one."""
    agents = cluster.agents[:3]
    old = next(a for a in _authorities(cluster, "show") if a["status"] == "active")
    old_id = str(old["authority_id"]).replace(":", "").lower()
    _authorities(cluster, "prepare")
    _authorities(cluster, "activate")

    async def taint_and_watch() -> list[str]:
        watchers = [asyncio.create_task(_issuer_change(a, old_id)) for a in agents]
        await asyncio.sleep(1.0)  # streams open and deliver their current SVIDs first
        await asyncio.to_thread(_authorities, cluster, "taint", str(old["authority_id"]))
        return await asyncio.gather(*watchers)

    new_akis = asyncio.run(taint_and_watch())
    assert all(aki and aki != old_id for aki in new_akis)

    def bundle_ids() -> set[str]:
        with WorkloadApiClient(agents[0].address, timeout=30) as client:
            bundles = client.fetch_x509_bundles().bundles
        bundle = bundles.get_x509_bundle_for_trust_domain(SpiffeId.parse(WORKLOAD_ID).trust_domain)
        return {_ski(c) for c in bundle.authorities}

    assert old_id in bundle_ids()  # tainted, still trusted until revoked
    _authorities(cluster, "revoke", str(old["authority_id"]))
    wait_until(lambda: old_id not in bundle_ids(), "the revoked authority to leave the bundle")
    assert set(new_akis) <= bundle_ids()


def _ski(cert: x509.Certificate) -> str:
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
