"""SpiffeSSLContext with the HTTP libraries that take an ssl.SSLContext: requests, urllib3, aiohttp, httpx.

A threaded ``http.server`` on a listening socket wrapped by the server context answers each
request with the SPIFFE ID it verified for the connection; every client presents its SVID and
authorizes the server's ID. A client with another ID is refused by the server, and a client that
expects another server ID refuses the server.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import httpx
import pytest
import requests
import urllib3
from requests.adapters import HTTPAdapter

from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.tls import SpiffeSSLContext, authorize_id, peer_id_from_ssl
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA

TD = TrustDomain.parse("example.org")
SERVER_ID, CLIENT_ID = SpiffeId.parse("spiffe://example.org/api"), SpiffeId.parse("spiffe://example.org/web")


@dataclass
class Source:
    ca: CA
    svid: X509Svid

    def get_x509_svid(self) -> X509Svid:
        return self.svid

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> object:
        return self.ca.x509_bundle().get_x509_bundle_for_trust_domain(trust_domain)


def _source(ca: CA, spiffe_id: SpiffeId) -> Source:
    issued = ca.issue_svid(str(spiffe_id))
    return Source(ca, X509Svid(spiffe_id, issued.chain, issued.key))  # type: ignore[arg-type]


class _WhoAmI(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = str(peer_id_from_ssl(self.connection)).encode()  # type: ignore[arg-type]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, CA]]:
    ca = CA.create("example.org")
    me = _source(ca, SERVER_ID)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WhoAmI)
    ctx = SpiffeSSLContext.server(me, me, TD, authorize_id(CLIENT_ID))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{httpd.server_address[1]}/", ca
    finally:
        httpd.shutdown()
        httpd.server_close()


def _client(ca: CA, spiffe_id: SpiffeId = CLIENT_ID, server_id: SpiffeId = SERVER_ID) -> SpiffeSSLContext:
    src = _source(ca, spiffe_id)
    return SpiffeSSLContext.client(src, src, TD, authorize_id(server_id))


class _SpiffeAdapter(HTTPAdapter):
    """requests: the context, and no host name matching (the SPIFFE ID is checked instead)."""

    def __init__(self, ctx: SpiffeSSLContext) -> None:
        self._ctx = ctx
        super().__init__()

    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        super().init_poolmanager(*args, ssl_context=self._ctx, assert_hostname=False, **kwargs)  # type: ignore[arg-type]


def _requests(url: str, ctx: SpiffeSSLContext) -> str:
    with requests.Session() as session:
        session.mount("https://", _SpiffeAdapter(ctx))
        reply = session.get(url, timeout=10)
        reply.raise_for_status()
        return reply.text


def _urllib3(url: str, ctx: SpiffeSSLContext) -> str:
    with urllib3.PoolManager(ssl_context=ctx, assert_hostname=False, retries=False) as pool:
        return pool.request("GET", url, timeout=10).data.decode()


def _aiohttp(url: str, ctx: SpiffeSSLContext) -> str:
    async def get() -> str:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session, \
                session.get(url) as reply:
            reply.raise_for_status()
            return await reply.text()

    return asyncio.run(get())


def _httpx_async(url: str, ctx: SpiffeSSLContext) -> str:
    async def get() -> str:
        async with httpx.AsyncClient(verify=ctx) as client:
            reply = await client.get(url)
            reply.raise_for_status()
            return reply.text

    return asyncio.run(get())


CLIENTS = {"requests": _requests, "urllib3": _urllib3, "aiohttp": _aiohttp, "httpx-async": _httpx_async}


@pytest.mark.parametrize("name", CLIENTS)
def test_mtls_with_each_client(server: tuple[str, CA], name: str) -> None:
    url, ca = server
    assert CLIENTS[name](url, _client(ca)) == str(CLIENT_ID)  # what the server verified


@pytest.mark.parametrize("name", CLIENTS)
def test_the_server_refuses_another_client_id(server: tuple[str, CA], name: str) -> None:
    url, ca = server
    with pytest.raises(Exception) as refused:  # each library wraps the TLS failure its own way
        CLIENTS[name](url, _client(ca, spiffe_id=SpiffeId.parse("spiffe://example.org/intruder")))
    assert not isinstance(refused.value, AssertionError)


@pytest.mark.parametrize("name", CLIENTS)
def test_the_client_refuses_a_server_with_another_id(server: tuple[str, CA], name: str) -> None:
    url, ca = server
    with pytest.raises(Exception, match="refused by the authorizer"):
        CLIENTS[name](url, _client(ca, server_id=SpiffeId.parse("spiffe://example.org/db")))
