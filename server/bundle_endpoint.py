"""The bundle/CRL HTTP endpoint: where third-party verifiers fetch the trust bundle and the CRLs.

Off unless ``[bundle_endpoint]`` is configured::

    server = await start_bundle_endpoint(ctx, cfg.bundle_endpoint)
    # GET /bundle          -> SPIFFE bundle JSON (application/json)
    # GET /crl             -> the CRLs, DER, one after another (application/pkix-crl)
    # GET /crl?format=pem  -> the same as PEM blocks (openssl crl / verify -CRLfile)

Plain HTTP: CRLs are signed by the CA, so they need no channel security; the bundle must
reach a verifier authentically in the first place (see docs/revocation.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from spiffe_server.config import BundleEndpointConfig
from spiffe_server.revocation import crls_to_pem

if TYPE_CHECKING:
    from spiffe_server.api.context import ServerContext

log = logging.getLogger("spiffe_server.bundle_endpoint")

_MAX_REQUEST_LINE = 2048
_READ_TIMEOUT = 5.0
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}

Response = tuple[int, str, bytes]


async def respond(ctx: ServerContext, method: str, target: str) -> Response:
    """Status, content type and body for one request line (no I/O besides the snapshot)."""
    if method != "GET":
        return 405, "text/plain", b"only GET is supported\n"
    path, _, query = target.partition("?")
    if path == "/bundle" and not query:
        return 200, "application/json", ctx.ca.bundle().to_json()
    if path == "/crl" and query in ("", "format=der", "format=pem"):
        crls = (await ctx.revocations.snapshot(ctx)).crls
        if query == "format=pem":
            return 200, "application/x-pem-file", crls_to_pem(crls)
        return 200, "application/pkix-crl", b"".join(crls)
    return 404, "text/plain", b"not found: try /bundle or /crl\n"


async def _handle(ctx: ServerContext, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
        parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
        status, ctype, body = (await respond(ctx, parts[0], parts[1])) if len(parts) >= 2 else \
            (400, "text/plain", b"bad request\n")
        writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                     f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
                     + body)
        await writer.drain()
    except (TimeoutError, ConnectionError, UnicodeDecodeError):
        pass
    except Exception:  # a listener logs and closes; it must not die on one request
        log.exception("bundle endpoint request failed")
    finally:
        writer.close()


async def start_bundle_endpoint(ctx: ServerContext, cfg: BundleEndpointConfig) -> asyncio.Server:
    """Serve ``/bundle`` and ``/crl`` over plain HTTP on ``bind_address:bind_port``."""
    server = await asyncio.start_server(lambda r, w: _handle(ctx, r, w), cfg.bind_address, cfg.bind_port)
    log.info("bundle endpoint started", extra={"address": f"{cfg.bind_address}:{cfg.bind_port}"})
    return server
