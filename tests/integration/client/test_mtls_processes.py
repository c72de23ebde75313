"""mTLS between two processes over TCP loopback, identities from the Workload API (WA-09).

The server process (mtls_server.py) takes its SVID and CRLs from an X509Source following the
fake Workload API in this process; the client here uses a fixed SVID.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from OpenSSL import SSL

from spiffe_py.errors import AuthorizationError
from spiffe_py.fsutil import write_private, write_public
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.tls import Authorizer, authorize_id, client_context, peer_spiffe_id
from tests.support.ca import CA, Issued
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

from .conftest import WAIT_SECONDS, static_source, wait_until

SERVER_ID = "spiffe://example.org/server"
CLIENT_ID = "spiffe://example.org/client"
SERVER_SCRIPT = Path(__file__).with_name("mtls_server.py")
EXPECT_SERVER = authorize_id(SpiffeId.parse(SERVER_ID))


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def rejections(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("rejected: ")]


@pytest.fixture
def server(api: FakeWorkloadApi, ca: CA, short_dir: Path) -> Iterator[ServerProcess]:
    api.set_x509(x509_response([ca.issue_svid(SERVER_ID)], ca))
    log = short_dir / "server.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), api.address, CLIENT_ID],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r} {log.read_text()}"
        yield ServerProcess(proc, int(line), log)
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_SECONDS)


@dataclass
class Outcome:
    server_cert: x509.Certificate | None
    reply: bytes
    conn: SSL.Connection


def open_socket(port: int) -> socket.socket:
    """A blocking socket (pyOpenSSL needs one) whose reads give up after WAIT_SECONDS instead of hanging."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", int(WAIT_SECONDS), 0))
    return sock


def connect(port: int, client: Issued, ca: CA, authorizer: Authorizer = EXPECT_SERVER) -> Outcome:
    """Handshake as ``client`` trusting ``ca`` and read the reply; SSL errors propagate."""
    source = static_source(client, ca)
    with open_socket(port) as sock:
        conn = SSL.Connection(client_context(source, source, authorizer), sock)
        conn.set_connect_state()
        conn.do_handshake()
        cert = conn.get_peer_certificate(as_cryptography=True)
        return Outcome(cert if isinstance(cert, x509.Certificate) else None, conn.recv(1024), conn)


def test_wa_09_authorized_client_and_server_see_each_other(server: ServerProcess, ca: CA) -> None:
    outcome = connect(server.port, ca.issue_svid(CLIENT_ID), ca)
    assert outcome.reply == f"hello {CLIENT_ID}\n".encode()
    assert peer_spiffe_id(outcome.conn) == SpiffeId.parse(SERVER_ID)


def test_server_authorizer_rejects_the_wrong_client_id(server: ServerProcess, ca: CA) -> None:
    # TLS 1.3: the client may finish its side before the server judges it; the refusal shows on read.
    with pytest.raises(SSL.Error):
        connect(server.port, ca.issue_svid("spiffe://example.org/intruder"), ca)
    wait_until(lambda: bool(server.rejections()), "the server to log the rejection")
    assert server.rejections()[0].startswith("rejected: AuthorizationError: tls: peer presenting "
                                             "'spiffe://example.org/intruder' refused by the authorizer")
    assert server.proc.poll() is None


def test_client_authorizer_rejects_the_wrong_server_id(server: ServerProcess, ca: CA) -> None:
    source = static_source(ca.issue_svid(CLIENT_ID), ca)
    ctx = client_context(source, source, authorize_id(SpiffeId.parse("spiffe://example.org/not-the-server")))
    with open_socket(server.port) as sock:
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        with pytest.raises(SSL.Error):
            conn.do_handshake()
    with pytest.raises(AuthorizationError, match=re.escape("unexpected id 'spiffe://example.org/server'")):
        peer_spiffe_id(conn)


def test_wa_09_client_from_an_untrusted_ca_is_rejected(server: ServerProcess, ca: CA) -> None:
    impostor = CA.create("example.org")  # same trust domain name, different root
    with pytest.raises(SSL.Error):
        connect(server.port, impostor.issue_svid(CLIENT_ID), ca)
    wait_until(lambda: bool(server.rejections()), "the server to log the rejection")
    assert "VerificationError" in server.rejections()[0]


def test_rotated_server_svid_is_used_for_new_handshakes_without_restart(
    server: ServerProcess, api: FakeWorkloadApi, ca: CA
) -> None:
    client = ca.issue_svid(CLIENT_ID)
    before = connect(server.port, client, ca).server_cert
    rotated = ca.issue_svid(SERVER_ID)
    api.set_x509(x509_response([rotated], ca))

    def presents_rotated() -> bool:
        cert = connect(server.port, client, ca).server_cert
        return cert is not None and cert.serial_number == rotated.leaf.serial_number

    wait_until(presents_rotated, "the server to present its rotated SVID")
    assert before is not None and before.serial_number != rotated.leaf.serial_number
    assert server.proc.poll() is None  # same process, never restarted


def test_revoked_client_is_rejected_once_the_crl_arrives(server: ServerProcess, api: FakeWorkloadApi, ca: CA) -> None:
    client = ca.issue_svid(CLIENT_ID)
    assert connect(server.port, client, ca).reply == f"hello {CLIENT_ID}\n".encode()
    api.set_x509(x509_response([ca.issue_svid(SERVER_ID)], ca, crls=[ca.crl([client.leaf])]))

    def refused() -> bool:
        try:
            return connect(server.port, client, ca).reply == b""
        except SSL.Error:
            return True

    wait_until(refused, "the server to refuse the revoked client")
    wait_until(lambda: bool(server.rejections()), "the server to log the rejection")
    assert server.rejections()[-1].startswith("rejected: RevokedError")


def test_openssl_s_client_interoperates_with_the_server(server: ServerProcess, ca: CA, short_dir: Path) -> None:
    """A standard TLS client (openssl s_client) completes mTLS with our server and is greeted by ID."""
    client = ca.issue_svid(CLIENT_ID)
    write_public(short_dir / "client.pem", client.chain_pem())
    write_private(short_dir / "client.key", client.key_pem())
    write_public(short_dir / "root.pem", ca.x509_bundle().to_pem())
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-verify_return_error", "-quiet",
         "-cert", str(short_dir / "client.pem"), "-key", str(short_dir / "client.key"),
         "-CAfile", str(short_dir / "root.pem")],
        check=False, input="", capture_output=True, text=True, timeout=WAIT_SECONDS,
    )  # fmt: skip
    assert f"hello {CLIENT_ID}" in result.stdout, result.stderr
