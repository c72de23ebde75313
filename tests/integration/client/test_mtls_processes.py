"""mTLS between two processes over TCP loopback, identities from the Workload API (WA-09).

The server process takes its SVID from an X509Source following the fake Workload API in this
process; the client here uses a fixed SVID.
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

from spiffe_py.bundle import BundleSet, X509Bundle
from spiffe_py.errors import AuthorizationError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.tls import Authorizer, authorize_id, client_context, peer_spiffe_id
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA, Issued
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

from .conftest import WAIT_SECONDS, wait_until

SERVER_ID = "spiffe://example.org/server"
CLIENT_ID = "spiffe://example.org/client"
SERVER_SCRIPT = Path(__file__).with_name("mtls_server.py")


@dataclass
class StaticSource:
    """A fixed SVID and bundle set (the client side of these tests)."""

    svid: X509Svid
    bundles: BundleSet

    def get_x509_svid(self) -> X509Svid:
        return self.svid

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        return self.bundles.get_x509_bundle_for_trust_domain(trust_domain)


def as_svid(issued: Issued) -> X509Svid:
    return X509Svid.parse(issued.chain_pem(), issued.key_pem())


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    port: int


@pytest.fixture
def server(api: FakeWorkloadApi, ca: CA) -> Iterator[ServerProcess]:
    api.set_x509(x509_response([ca.issue_svid(SERVER_ID)], ca))
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), api.address, CLIENT_ID],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"server did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        yield ServerProcess(proc, int(line))
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


def connect(port: int, svid: X509Svid, bundles: BundleSet, authorizer: Authorizer) -> Outcome:
    """Handshake and read the reply; SSL errors propagate."""
    ctx = client_context(StaticSource(svid, bundles), StaticSource(svid, bundles), authorizer)
    sock = open_socket(port)
    conn = SSL.Connection(ctx, sock)
    conn.set_connect_state()
    try:
        conn.do_handshake()
        cert = conn.get_peer_certificate(as_cryptography=True)
        reply = conn.recv(1024)
        return Outcome(cert, reply, conn)
    finally:
        sock.close()


def test_wa_09_authorized_client_and_server_see_each_other(server: ServerProcess, ca: CA) -> None:
    outcome = connect(server.port, as_svid(ca.issue_svid(CLIENT_ID)), BundleSet.of(ca.x509_bundle()),
                      authorize_id(SpiffeId.parse(SERVER_ID)))  # fmt: skip
    assert outcome.reply == f"hello {CLIENT_ID}\n".encode()
    assert peer_spiffe_id(outcome.conn) == SpiffeId.parse(SERVER_ID)


def test_server_authorizer_rejects_the_wrong_client_id(server: ServerProcess, ca: CA) -> None:
    wrong = as_svid(ca.issue_svid("spiffe://example.org/intruder"))
    # TLS 1.3: the client may finish its side before the server judges it; the refusal shows on read.
    with pytest.raises(SSL.Error):
        connect(server.port, wrong, BundleSet.of(ca.x509_bundle()), authorize_id(SpiffeId.parse(SERVER_ID)))
    assert server.proc.poll() is None


def test_client_authorizer_rejects_the_wrong_server_id(server: ServerProcess, ca: CA) -> None:
    expected = SpiffeId.parse("spiffe://example.org/not-the-server")
    svid = as_svid(ca.issue_svid(CLIENT_ID))
    ctx = client_context(StaticSource(svid, BundleSet.of(ca.x509_bundle())),
                         StaticSource(svid, BundleSet.of(ca.x509_bundle())), authorize_id(expected))  # fmt: skip
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
        connect(server.port, as_svid(impostor.issue_svid(CLIENT_ID)), BundleSet.of(ca.x509_bundle()),
                authorize_id(SpiffeId.parse(SERVER_ID)))  # fmt: skip


def test_rotated_server_svid_is_used_for_new_handshakes_without_restart(
    server: ServerProcess, api: FakeWorkloadApi, ca: CA
) -> None:
    client_svid, bundles = as_svid(ca.issue_svid(CLIENT_ID)), BundleSet.of(ca.x509_bundle())
    authorizer = authorize_id(SpiffeId.parse(SERVER_ID))
    before = connect(server.port, client_svid, bundles, authorizer).server_cert
    rotated = ca.issue_svid(SERVER_ID)
    api.set_x509(x509_response([rotated], ca))

    def presents_rotated() -> bool:
        cert = connect(server.port, client_svid, bundles, authorizer).server_cert
        return cert is not None and cert.serial_number == rotated.leaf.serial_number

    wait_until(presents_rotated, "the server to present its rotated SVID")
    assert before is not None and before.serial_number != rotated.leaf.serial_number
    assert server.proc.poll() is None  # same process, never restarted


def test_revoked_client_is_rejected_once_the_crl_arrives(server: ServerProcess, api: FakeWorkloadApi, ca: CA) -> None:
    client = ca.issue_svid(CLIENT_ID)
    client_svid, bundles = as_svid(client), BundleSet.of(ca.x509_bundle())
    authorizer = authorize_id(SpiffeId.parse(SERVER_ID))
    assert connect(server.port, client_svid, bundles, authorizer).reply == f"hello {CLIENT_ID}\n".encode()
    api.set_x509(x509_response([ca.issue_svid(SERVER_ID)], ca, crls=[ca.crl([client.leaf])]))

    def refused() -> bool:
        try:
            return connect(server.port, client_svid, bundles, authorizer).reply == b""
        except SSL.Error:
            return True

    wait_until(refused, "the server to refuse the revoked client")
