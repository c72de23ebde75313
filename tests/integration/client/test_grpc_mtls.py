"""grpcio mTLS helpers of spiffe_py.tls over TCP loopback, server identity from an X509Source."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from cryptography import x509
from OpenSSL import SSL

from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.tls import (
    SpiffeAuthInterceptor,
    authorize_any,
    authorize_id,
    client_context,
    grpc_channel_credentials,
    grpc_server_credentials,
)
from spiffe_py.workloadapi import WorkloadApiClient, X509Source
from tests.support.ca import CA, Issued
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

from .conftest import TD, WAIT_SECONDS, static_source, wait_until

SERVER_ID = "spiffe://example.org/server"
CLIENT_ID = "spiffe://example.org/client"
METHOD = "/test.Echo/Who"


def who(request: bytes, context: Any) -> bytes:
    peer: bytes = dict(context.auth_context())["peer_spiffe_id"][0]
    return peer


@dataclass
class GrpcServer:
    port: int
    source: X509Source


@pytest.fixture
def grpc_server(api: FakeWorkloadApi, ca: CA) -> Iterator[GrpcServer]:
    api.set_x509(x509_response([ca.issue_svid(SERVER_ID, dns_names=["localhost"])], ca))
    source = X509Source.start(WorkloadApiClient(api.address), timeout=WAIT_SECONDS)
    interceptor = SpiffeAuthInterceptor(source, authorize_id(SpiffeId.parse(CLIENT_ID)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    handler = grpc.method_handlers_generic_handler("test.Echo", {"Who": grpc.unary_unary_rpc_method_handler(who)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", grpc_server_credentials(source, source, TrustDomain.parse(TD)))
    server.start()
    try:
        yield GrpcServer(port, source)
    finally:
        server.stop(grace=None)
        source.close()


def call(port: int, issued: Issued, ca: CA) -> bytes:
    src = static_source(issued, ca)
    creds = grpc_channel_credentials(src, src, TrustDomain.parse(TD))
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        reply: bytes = channel.unary_unary(METHOD)(b"", timeout=WAIT_SECONDS)
        return reply


def test_authorized_client_reaches_the_handler(grpc_server: GrpcServer, ca: CA) -> None:
    assert call(grpc_server.port, ca.issue_svid(CLIENT_ID), ca) == CLIENT_ID.encode()


def test_interceptor_denies_the_wrong_spiffe_id(grpc_server: GrpcServer, ca: CA) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(grpc_server.port, ca.issue_svid("spiffe://example.org/intruder"), ca)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "unexpected id 'spiffe://example.org/intruder'" in info.value.details()


def test_client_from_an_untrusted_root_fails_the_handshake(grpc_server: GrpcServer, ca: CA) -> None:
    impostor = CA.create(TD)
    with pytest.raises(grpc.RpcError) as info:
        call(grpc_server.port, impostor.issue_svid(CLIENT_ID), ca)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_interceptor_rejects_a_revoked_client(grpc_server: GrpcServer, api: FakeWorkloadApi, ca: CA) -> None:
    client = ca.issue_svid(CLIENT_ID)
    api.set_x509(x509_response([ca.issue_svid(SERVER_ID, dns_names=["localhost"])], ca, crls=[ca.crl([client.leaf])]))
    wait_until(lambda: len(grpc_server.source.get_crls()) == 1, "the CRL to reach the server's source")
    with pytest.raises(grpc.RpcError) as info:
        call(grpc_server.port, client, ca)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in info.value.details()


def presented_serial(port: int, ca: CA) -> int:
    """Serial of the certificate the server presents, read with a pyOpenSSL handshake."""
    src = static_source(ca.issue_svid(CLIENT_ID), ca)
    ctx = client_context(src, src, authorize_any())
    ctx.set_alpn_protos([b"h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_SECONDS) as sock:
        sock.settimeout(None)
        conn = SSL.Connection(ctx, sock)
        conn.set_connect_state()
        conn.do_handshake()
        cert = conn.get_peer_certificate(as_cryptography=True)
    assert isinstance(cert, x509.Certificate)
    return cert.serial_number


def test_rotated_server_svid_is_presented_without_restart(
    grpc_server: GrpcServer, api: FakeWorkloadApi, ca: CA
) -> None:
    before = presented_serial(grpc_server.port, ca)
    rotated = ca.issue_svid(SERVER_ID, dns_names=["localhost"])
    api.set_x509(x509_response([rotated], ca))
    wait_until(
        lambda: presented_serial(grpc_server.port, ca) == rotated.leaf.serial_number, "grpc to present the new SVID"
    )
    assert before != rotated.leaf.serial_number
    assert call(grpc_server.port, ca.issue_svid(CLIENT_ID), ca) == CLIENT_ID.encode()
