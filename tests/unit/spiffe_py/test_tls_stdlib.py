"""spiffe_py.tls.SpiffeSSLContext: standard library ssl contexts for mTLS with SVIDs.

Real TLS handshakes over socketpairs, both through blocking sockets (requests/urllib3, httpx
sync) and through asyncio's SSL objects (uvicorn, aiohttp, httpx async).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from dataclasses import dataclass

import pytest

from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.tls import (
    Authorizer,
    SpiffeSSLContext,
    authorize_any,
    authorize_id,
    authorize_member_of,
    peer_id_from_ssl,
)
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA

TD = TrustDomain.parse("example.org")
SERVER_ID, CLIENT_ID = SpiffeId.parse("spiffe://example.org/server"), SpiffeId.parse("spiffe://example.org/client")


@dataclass
class Source:
    """An SVID and a bundle that the test rotates by replacing them."""

    ca: CA
    svid: X509Svid

    def get_x509_svid(self) -> X509Svid:
        return self.svid

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> object:
        return self.ca.x509_bundle().get_x509_bundle_for_trust_domain(trust_domain)

    def rotate(self) -> None:
        self.svid = _svid(self.ca, self.svid.spiffe_id)


def _svid(ca: CA, spiffe_id: SpiffeId) -> X509Svid:
    issued = ca.issue_svid(str(spiffe_id))
    return X509Svid(spiffe_id, issued.chain, issued.key)  # type: ignore[arg-type]


def _pair(server: SpiffeSSLContext, client: SpiffeSSLContext) -> tuple[object, object]:
    """Handshake over a socketpair (server in a thread); each side's peer ID or error."""
    a, b = socket.socketpair()
    results: dict[str, object] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as conn:
                results["server"] = peer_id_from_ssl(conn)
                conn.sendall(b"ok")
        except (ssl.SSLError, OSError) as err:
            results["server"] = err

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(b) as conn:
            peer = peer_id_from_ssl(conn)
            results["client"] = peer if conn.recv(2) == b"ok" else ConnectionError("no reply")
    except (ssl.SSLError, OSError) as err:
        results["client"] = err
    finally:
        thread.join(10)
        a.close()
        b.close()
    return results["server"], results["client"]


def _contexts(server_auth: Authorizer, client_auth: Authorizer, *, client_ca: CA | None = None,
              ) -> tuple[Source, Source, SpiffeSSLContext, SpiffeSSLContext]:
    ca = CA.create("example.org")
    server_src = Source(ca, _svid(ca, SERVER_ID))
    client_src = Source(ca, _svid(client_ca or ca, CLIENT_ID))
    return (server_src, client_src, SpiffeSSLContext.server(server_src, server_src, TD, server_auth),
            SpiffeSSLContext.client(client_src, client_src, TD, client_auth))


def test_mutual_authentication_over_blocking_sockets() -> None:
    _, _, server, client = _contexts(authorize_id(CLIENT_ID), authorize_id(SERVER_ID))
    assert _pair(server, client) == (CLIENT_ID, SERVER_ID)


def test_the_authorizer_refuses_and_says_which_id_it_refused() -> None:
    other = SpiffeId.parse("spiffe://example.org/other")
    _, _, server, client = _contexts(authorize_id(other), authorize_any())
    server_err, client_err = _pair(server, client)
    assert isinstance(server_err, ssl.SSLCertVerificationError)
    assert "refused by the authorizer" in str(server_err) and "spiffe://example.org/client" in str(server_err)
    assert isinstance(client_err, ssl.SSLError | OSError)  # the server closed: no reply


def test_the_client_refuses_a_server_outside_its_authorizer() -> None:
    _, _, server, client = _contexts(authorize_any(), authorize_id(SpiffeId.parse("spiffe://example.org/db")))
    _, client_err = _pair(server, client)
    assert isinstance(client_err, ssl.SSLCertVerificationError)
    assert "spiffe://example.org/server" in str(client_err)


def test_a_chain_from_another_ca_fails_openssl_verification() -> None:
    _, _, server, client = _contexts(authorize_any(), authorize_any(), client_ca=CA.create("example.org"))
    server_err, _ = _pair(server, client)
    assert isinstance(server_err, ssl.SSLCertVerificationError)
    assert "certificate verify failed" in str(server_err)


def test_a_peer_of_another_trust_domain_signed_by_the_trusted_ca_is_refused() -> None:
    """The CA data is one trust domain's: an ID of another trust domain is refused even if the chain verifies."""
    ca = CA.create("example.org")
    src = Source(ca, _svid(ca, SERVER_ID))
    stranger = Source(ca, _svid(ca, SpiffeId.parse("spiffe://evil.org/client")))
    server = SpiffeSSLContext.server(src, src, TD, authorize_any())
    client = SpiffeSSLContext.client(stranger, stranger, TD, authorize_any())
    server_err, _ = _pair(server, client)
    assert isinstance(server_err, ssl.SSLCertVerificationError)
    assert "trusts only 'example.org'" in str(server_err)


def test_a_new_connection_presents_the_rotated_svid() -> None:
    server_src, client_src, server, client = _contexts(authorize_member_of(TD), authorize_member_of(TD))
    first = server.current_context()
    assert _pair(server, client) == (CLIENT_ID, SERVER_ID)
    server_src.rotate()
    client_src.rotate()
    assert server.current_context() is not first  # rebuilt for the new SVID
    assert server.current_context() is server.current_context()  # and kept while it is current
    assert _pair(server, client) == (CLIENT_ID, SERVER_ID)


def test_no_key_file_is_left_behind(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    _contexts(authorize_any(), authorize_any())
    assert list(tmp_path.iterdir()) == []  # type: ignore[attr-defined]


async def test_asyncio_streams_check_the_peer_after_the_handshake() -> None:
    """asyncio (uvicorn, aiohttp, httpx async) goes through SSLObject: the same checks apply."""
    _, client_src, server_ctx, client_ctx = _contexts(authorize_id(CLIENT_ID), authorize_id(SERVER_ID))
    seen: list[object] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_id_from_ssl(writer.get_extra_info("ssl_object")))
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        assert peer_id_from_ssl(writer.get_extra_info("ssl_object")) == SERVER_ID
        assert await reader.read(2) == b"ok"
        writer.close()
        assert seen == [CLIENT_ID]
        refusing = SpiffeSSLContext.client(client_src, client_src, TD,
                                           authorize_id(SpiffeId.parse("spiffe://example.org/db")))
        with pytest.raises(ssl.SSLCertVerificationError, match="refused by the authorizer"):
            await asyncio.open_connection("127.0.0.1", port, ssl=refusing)
    finally:
        server.close()
        await server.wait_closed()
