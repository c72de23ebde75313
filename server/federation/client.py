"""Fetch a foreign bundle from its bundle endpoint: one bounded HTTPS GET (the I/O shell).

::

    body = await fetch_bundle(rel, roots=known_roots)     # FetchRefused on any failure

``https_web``: the server certificate must chain to the system trust store (``SSL_CERT_FILE``
and ``SSL_CERT_DIR`` are honoured) and match the URL's host. ``https_spiffe``: it must chain
to ``roots`` (the last known bundle of the endpoint's trust domain) and be an X509-SVID with
exactly the configured SPIFFE ID; that is checked before the request is sent. Redirects are
not followed. The response head is capped at 16 KiB and the body at ``max_body`` bytes
before any of it is buffered (Content-Length, chunked and read-to-close bodies alike); the
whole exchange must finish within ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spiffe_py.bundle import MAX_BUNDLE_BYTES
from spiffe_server.federation.relationship import FetchRefused, Profile, Relationship, check_endpoint_id

MAX_HEAD_BYTES = 16 * 1024
FETCH_TIMEOUT = 10.0
USER_AGENT = "spiffe-py-bundle-client"


def client_context(rel: Relationship, roots: Sequence[x509.Certificate]) -> ssl.SSLContext:
    """The TLS client context for one fetch under the relationship's profile."""
    if rel.profile is Profile.HTTPS_WEB:
        ctx = ssl.create_default_context()  # system roots, hostname checked (FED-16)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
    if not roots:
        raise FetchRefused("no_bundle", f"no bundle of {rel.endpoint_spiffe_id.trust_domain.name!r} "  # type: ignore[union-attr]
                                        "to authenticate the https_spiffe endpoint with")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # an X509-SVID is checked by its SPIFFE ID, not a DNS name (FED-21)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # every bundle authority is a trust anchor, root or not
    ctx.load_verify_locations(cadata="".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in roots))
    return ctx


async def fetch_bundle(rel: Relationship, *, roots: Sequence[x509.Certificate] = (),
                       max_body: int = MAX_BUNDLE_BYTES, timeout: float = FETCH_TIMEOUT) -> bytes:  # noqa: ASYNC109
    """The body of one GET of the relationship's bundle endpoint; FetchRefused on any failure."""
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(rel, roots, max_body)
    except TimeoutError:
        raise FetchRefused("unreachable", f"bundle endpoint {rel.bundle_endpoint_url!r} did not answer "
                                          f"within {timeout:g}s") from None
    except ssl.SSLCertVerificationError as err:
        raise FetchRefused("untrusted_endpoint", f"bundle endpoint {rel.bundle_endpoint_url!r} certificate "
                                                 f"not trusted: {err.verify_message}") from None
    except (OSError, asyncio.IncompleteReadError) as err:
        raise FetchRefused("unreachable", f"bundle endpoint {rel.bundle_endpoint_url!r}: "
                                          f"{err.__class__.__name__}: {err}") from None


async def _fetch(rel: Relationship, roots: Sequence[x509.Certificate], max_body: int) -> bytes:
    parts = urlsplit(rel.bundle_endpoint_url)
    host = parts.hostname or ""
    port = parts.port or 443
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(host, port, ssl=client_context(rel, roots),
                                                   server_hostname=host, limit=MAX_HEAD_BYTES)
    try:
        if rel.profile is Profile.HTTPS_SPIFFE:
            assert rel.endpoint_spiffe_id is not None
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            check_endpoint_id(x509.load_der_x509_certificate(der), rel.endpoint_spiffe_id)
        host_header = parts.netloc
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\nAccept: application/json\r\n"
                     f"User-Agent: {USER_AGENT}\r\nConnection: close\r\n\r\n".encode("ascii"))
        await writer.drain()
        return await _read_response(reader, max_body, rel.bundle_endpoint_url)
    finally:
        writer.close()


def _parse_head(head: bytes, url: str) -> tuple[int, dict[str, str]]:
    try:
        lines = head.decode("latin-1").split("\r\n")
        version, status_text, *_ = lines[0].split(" ", 2)
        status = int(status_text)
    except (ValueError, IndexError):
        raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed status line") from None
    if not version.startswith("HTTP/1."):
        raise FetchRefused("bad_response", f"bundle endpoint {url!r} does not speak HTTP/1.x")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed header")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _read_response(reader: asyncio.StreamReader, max_body: int, url: str) -> bytes:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a response head over "
                                           f"{MAX_HEAD_BYTES} bytes") from None
    status, headers = _parse_head(head[:-4], url)
    if status != 200:
        # redirects included: following one is optional (FED-17) and not done here
        raise FetchRefused("bad_response", f"bundle endpoint {url!r} answered HTTP {status}")
    too_large = FetchRefused("too_large", f"bundle endpoint {url!r} sent a body over {max_body} bytes")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader, max_body, too_large, url)
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed Content-Length") from None
        if length < 0:
            raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed Content-Length")
        if length > max_body:
            raise too_large  # refused on the header: nothing of the body is read
        return await reader.readexactly(length)
    body = await reader.read(max_body + 1)  # no length: read to close, one byte past the cap at most
    while len(body) <= max_body:
        more = await reader.read(max_body + 1 - len(body))
        if not more:
            return body
        body += more
    raise too_large


async def _read_chunked(reader: asyncio.StreamReader, max_body: int, too_large: FetchRefused, url: str) -> bytes:
    body = bytearray()
    while True:
        try:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except (asyncio.LimitOverrunError, ValueError):
            raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed chunk") from None
        if size < 0:
            raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed chunk")
        if size == 0:
            return bytes(body)
        if len(body) + size > max_body:
            raise too_large
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise FetchRefused("bad_response", f"bundle endpoint {url!r} sent a malformed chunk")
