"""Real spiffe-server + spiffe-agent processes, real Unix socket, py-spiffe and openssl as clients.

Order matters: the last tests stop the server and restart the agent.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py import _pem
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from tests.integration.agent.conftest import TD, VENV_BIN, Env, x509_stream

pytestmark = pytest.mark.slow

WORKLOAD_ID = f"spiffe://{TD}/workload"


def py_spiffe_client(env: Env) -> object:
    from spiffe import WorkloadApiClient

    return WorkloadApiClient(f"unix://{env.socket_path}")


def test_fetch_x509_svid_with_py_spiffe_and_openssl_verify(env: Env, tmp_path: Path) -> None:
    """WA-11/12: py-spiffe parses our response; openssl verifies the SVID against the returned bundle."""
    with py_spiffe_client(env) as client:  # type: ignore[attr-defined]
        svid = client.fetch_x509_svid()
        bundles = client.fetch_x509_bundles()
    assert str(svid.spiffe_id) == WORKLOAD_ID
    bundle = bundles.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
    assert bundle is not None and bundle.x509_authorities
    leaf, *intermediates = svid.cert_chain
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    (tmp_path / "inter.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in intermediates))
    (tmp_path / "ca.pem").write_bytes(b"".join(c.public_bytes(Encoding.PEM) for c in bundle.x509_authorities))
    argv = ["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem")]
    if intermediates:
        argv += ["-untrusted", str(tmp_path / "inter.pem")]
    out = subprocess.run([*argv, str(tmp_path / "leaf.pem")], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith(": OK")


def test_fetch_jwt_svid_and_validate_with_py_spiffe(env: Env) -> None:
    """WA-19..21 and WA-25: mint a JWT-SVID, then validate it through the agent."""
    with py_spiffe_client(env) as client:  # type: ignore[attr-defined]
        jwt_svid = client.fetch_jwt_svid(audience={"svc-a"})
        assert str(jwt_svid.spiffe_id) == WORKLOAD_ID
        validated = client.validate_jwt_svid(jwt_svid.token, "svc-a")
        jwt_bundles = client.fetch_jwt_bundles()
    assert str(validated.spiffe_id) == WORKLOAD_ID
    assert jwt_bundles.get_bundle_for_trust_domain(jwt_svid.spiffe_id.trust_domain) is not None


def test_socket_world_connectable_in_0755_dir(env: Env) -> None:
    assert env.socket_path.stat().st_mode & 0o777 == 0o777
    assert env.socket_path.parent.stat().st_mode & 0o777 == 0o755


def test_cli_fetch_x509_writes_key_0600(env: Env, tmp_path: Path) -> None:
    out = env.agent_cli("api", "fetch", "x509", "--write", str(tmp_path / "out"), "--output", "json")
    assert WORKLOAD_ID in out.stdout
    assert (tmp_path / "out" / "svid.0.key").stat().st_mode & 0o777 == 0o600
    assert x509.load_pem_x509_certificates((tmp_path / "out" / "svid.0.pem").read_bytes())


def test_cli_validate_rejects_wrong_audience(env: Env) -> None:
    token = env.agent_cli("api", "fetch", "jwt", "--audience", "svc-b", "--output", "json").stdout

    svid = json.loads(token)[0]["svid"]
    ok = env.agent_cli("api", "validate", "jwt", "--audience", "svc-b", "--svid", svid, "--output", "json")
    assert WORKLOAD_ID in ok.stdout
    bad = env.agent_cli("api", "validate", "jwt", "--audience", "other", "--svid", svid, check=False)
    assert bad.returncode == 1
    assert "INVALID_ARGUMENT" in bad.stderr
    assert svid not in bad.stderr  # no token in error output


def test_cli_fetch_defaults_to_x509_and_pretty_output_has_no_reprs(env: Env) -> None:
    out = env.agent_cli("api", "fetch").stdout  # no kind: x509, as in SPIRE
    assert out.startswith("Received 1 X509-SVID\n")
    assert f"SPIFFE ID    : {WORKLOAD_ID}" in out.splitlines()
    assert re.search(r"^Expires at   : \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+[smh]\)$", out, re.M), out
    token = json.loads(env.agent_cli("api", "fetch", "jwt", "--audience", "svc-b", "--output", "json").stdout)[0]
    valid = env.agent_cli("api", "validate", "jwt", "--audience", "svc-b", "--svid", token["svid"]).stdout
    assert valid.startswith("SVID is valid.\n")
    assert re.search(r"^exp +: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(in \d+[smh]\)$", valid, re.M), valid
    assert re.search(r"^aud +: svc-b$", valid, re.M), valid
    for text in (out, valid):
        assert not re.search(r"[{}']", text), text  # no Python reprs


def test_each_cli_names_the_other_kind_of_socket(env: Env) -> None:
    agent = subprocess.run([str(VENV_BIN / "spiffe-agent"), "api", "fetch", "--socket-path", str(env.admin_socket)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert agent.returncode == 1 and "this is not a SPIFFE Workload API (spiffe-agent) socket" in agent.stderr
    server = subprocess.run([str(VENV_BIN / "spiffe-server"), "entry", "count", "--socket-path", str(env.socket_path)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert server.returncode == 1 and "this is not a spiffe-server admin socket" in server.stderr, server.stderr


async def test_missing_security_header_is_invalid_argument_we05(env: Env) -> None:
    channel = Channel(path=str(env.socket_path))
    try:
        with pytest.raises(GRPCError) as err:
            await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=["a"]))
    finally:
        channel.close()
    assert err.value.status is Status.INVALID_ARGUMENT
    assert err.value.message == "security header missing from request"


def _status_as_nobody(socket_path: Path) -> str:
    """Call FetchX509SVID from a forked child running as uid/gid 65534; return the status name."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no imports from here on (root's site-packages may be unreadable as nobody)
        code = "OK"
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)

            async def call() -> None:
                async with x509_stream(socket_path) as stream:
                    await stream.recv_message()

            asyncio.run(call())
        except GRPCError as err:
            code = err.status.name
        except BaseException as err:  # report anything to the parent
            code = f"error {type(err).__name__}: {err}"
        os.write(write_fd, code.encode())
        os._exit(0)
    os.close(write_fd)
    os.waitpid(pid, 0)
    with os.fdopen(read_fd, "rb") as fh:
        return fh.read().decode()


def test_caller_without_entry_gets_permission_denied_we14(env: Env) -> None:
    """A real process running as uid 65534 has no entry: PERMISSION_DENIED."""
    assert _status_as_nobody(env.socket_path) == "PERMISSION_DENIED"


async def test_new_entry_reaches_open_stream_wa06(env: Env) -> None:
    """A new matching entry is pushed to an already open FetchX509SVID stream (latency printed, not asserted)."""
    async with x509_stream(env.socket_path) as stream:
        first = await asyncio.wait_for(stream.recv_message(), 60)
        assert [s.spiffe_id for s in first.svids] == [WORKLOAD_ID]
        started = time.monotonic()
        second_id = f"spiffe://{TD}/second"
        await asyncio.to_thread(env.create_entry, second_id, f"unix:uid:{os.geteuid()}", hint="second")
        ids: list[str] = []
        while len(ids) < 2:
            msg = await asyncio.wait_for(stream.recv_message(), 60)
            ids = [s.spiffe_id for s in msg.svids]
        print(f"new entry reached the open stream after {time.monotonic() - started:.2f}s")
    assert sorted(ids) == sorted([WORKLOAD_ID, second_id])
    assert len({s.hint for s in msg.svids}) == 2  # WA-14


async def test_revoked_svid_is_replaced_and_listed_in_crl(env: Env) -> None:
    """Revoking a workload SVID at the server makes the agent re-issue it; the pushed CRL lists the old serial."""
    async with x509_stream(env.socket_path) as stream:
        first = await asyncio.wait_for(stream.recv_message(), 60)
        old = {s.spiffe_id: _pem.certificates_from_der(s.x509_svid)[0].serial_number for s in first.svids}
        serial = old[WORKLOAD_ID]
        await asyncio.to_thread(env.server_cli, "revoke", "svid", "--serial", f"{serial:x}")
        while True:
            msg = await asyncio.wait_for(stream.recv_message(), 60)
            now = {s.spiffe_id: _pem.certificates_from_der(s.x509_svid)[0].serial_number for s in msg.svids}
            if now.get(WORKLOAD_ID, serial) != serial and msg.crl:
                break
    crls = [x509.load_der_x509_crl(der) for der in msg.crl]
    assert any(c.get_revoked_certificate_by_serial_number(serial) is not None for c in crls)


def _authorities(env: Env, action: str, authority_id: str = "") -> list[dict[str, object]]:
    args = ["localauthority", "x509", action, "--output", "json"]
    if authority_id:
        args += ["--authority-id", authority_id]
    result: list[dict[str, object]] = json.loads(env.server_cli(*args))["authorities"]
    return result


async def test_tainted_authority_makes_agent_reissue(env: Env) -> None:
    """After rotating the X.509 authority and tainting the old one, the workload gets an SVID from the new one."""
    old = next(a for a in _authorities(env, "show") if a["status"] == "active")
    _authorities(env, "prepare")
    _authorities(env, "activate")
    async with x509_stream(env.socket_path) as stream:
        first = await asyncio.wait_for(stream.recv_message(), 60)
        before = _issuer_ids(first)
        await asyncio.to_thread(_authorities, env, "taint", str(old["authority_id"]))
        while True:
            msg = await asyncio.wait_for(stream.recv_message(), 60)
            if _issuer_ids(msg) and not _issuer_ids(msg) & before:
                break
    assert str(old["authority_id"]).replace(":", "").lower() in before


def _issuer_ids(msg: workload_pb2.X509SVIDResponse) -> set[str]:
    """AKIs of every leaf in the response (lowercase hex)."""
    out = set()
    for s in msg.svids:
        leaf = _pem.certificates_from_der(s.x509_svid)[0]
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
        out.add((aki or b"").hex())
    return out


def test_server_down_cached_svids_still_served_then_recovers(env: Env) -> None:
    env.stop(env.server)
    with py_spiffe_client(env) as client:  # type: ignore[attr-defined]
        # the default identity depends on entry ids (random), so look at all of them
        assert WORKLOAD_ID in {str(svid.spiffe_id) for svid in client.fetch_x509_svids()}
    env.start_server()
    env.create_entry(f"spiffe://{TD}/after-restart", f"unix:uid:{os.geteuid()}")

    def arrived() -> bool:
        out = env.agent_cli("api", "fetch", "x509", "--output", "json", check=False)
        return "after-restart" in out.stdout

    deadline = time.monotonic() + 120
    while not arrived():
        assert time.monotonic() < deadline, env.dump()
        time.sleep(1)


def test_agent_restart_needs_no_join_token(env: Env) -> None:
    env.stop(env.agent)
    assert env.agent is not None and env.agent.returncode == 0  # SIGTERM is a clean shutdown
    assert not env.socket_path.exists()
    env.start_agent(join_token=None)
    env.wait_agent_ready()
    out = env.agent_cli("api", "fetch", "x509", "--output", "json")
    assert WORKLOAD_ID in out.stdout
    key = env.root / "agent" / "agent-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
