"""The bundle endpoint: where federated peers (and other verifiers) fetch this trust domain's bundle.

Off unless ``[federation.bundle_endpoint]`` is configured::

    endpoint = BundleEndpoint(cfg.federation.bundle_endpoint, bundle=ctx.ca.bundle, crls=crl_source,
                              svid_files=(data_dir / "server-svid/svid.pem", data_dir / "server-svid/svid.key"))
    await endpoint.start()
    # GET /                -> SPIFFE bundle JSON (use, spiffe_sequence, spiffe_refresh_hint)
    # GET /bundle          -> the same (the path of the former plain-HTTP endpoint)
    # GET /crl             -> the CRLs, DER, one after another (application/pkix-crl)
    # GET /crl?format=pem  -> the same as PEM blocks

Profiles: ``https_spiffe`` presents the server's own X509-SVID (the files the server writes on
every renewal, re-read when they change); ``https_web`` presents ``cert_file``/``key_file``,
re-read when they change. Either way no client authentication is asked for (FED-13). Plain
HTTP only with ``insecure_http``, with a warning. Requests are parsed by the OIDC provider's
strict, bounded reader: the head is capped and timed, bodies refused, one request per
connection, a cap on open connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from spiffe_py.bundle import SpiffeBundle
from spiffe_server.config import FederationEndpointConfig
from spiffe_server.oidc import (
    FILE_POLL_SECONDS,
    HANDSHAKE_TIMEOUT,
    HEAD_TIMEOUT,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    WRITE_TIMEOUT,
    HttpError,
    Response,
    ServingCertificate,
    encode,
    parse_head,
)
from spiffe_server.revocation import crls_to_pem

log = logging.getLogger("spiffe_server.federation.endpoint")

BUNDLE_PATHS = frozenset({"/", "/bundle"})


def _error(status: int, message: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", f"{message}\n".encode())


def respond(bundle: SpiffeBundle, crls: Sequence[bytes] | None, method: str, target: str) -> Response:
    """The response to one parsed request (no I/O); ``crls`` is None when not asked for."""
    path, _, query = target.partition("?")
    if method not in ("GET", "HEAD"):
        return Response(405, "text/plain; charset=utf-8", b"only GET and HEAD are supported\n",
                        extra_headers=(("Allow", "GET, HEAD"),))
    if path in BUNDLE_PATHS and not query:
        return Response(200, "application/json", bundle.to_json())
    if path == "/crl" and query in ("", "format=der", "format=pem") and crls is not None:
        if query == "format=pem":
            return Response(200, "application/x-pem-file", crls_to_pem(list(crls)))
        return Response(200, "application/pkix-crl", b"".join(crls))
    return _error(404, "not found: try / or /crl")


def wants_crls(target: str) -> bool:
    """True if the request is for the CRLs (read only then: it may touch the datastore)."""
    return target.partition("?")[0] == "/crl"


class BundleEndpoint:
    """The listener. ``bundle`` is the trust domain's current bundle; ``crls`` the current CRLs (DER)."""

    def __init__(self, cfg: FederationEndpointConfig, *, bundle: Callable[[], SpiffeBundle],
                 crls: Callable[[], Awaitable[Sequence[bytes]]], svid_files: tuple[Path, Path]) -> None:
        self._cfg = cfg
        self._bundle = bundle
        self._crls = crls
        self._cert: ServingCertificate | None = None
        if not cfg.insecure_http:
            cert_file, key_file = svid_files
            if cfg.profile == "https_web":
                assert cfg.cert_file is not None and cfg.key_file is not None
                cert_file, key_file = cfg.cert_file, cfg.key_file
            self._cert = ServingCertificate(cert_file, key_file, label="bundle endpoint")
        self._open = 0
        self._server: asyncio.Server | None = None
        self._poll: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``bind_port = 0``)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Start listening."""
        ssl_ctx = None if self._cert is None else self._cert.listener
        self._server = await asyncio.start_server(
            self._handle, self._cfg.bind_address, self._cfg.bind_port, limit=MAX_HEAD_BYTES, ssl=ssl_ctx,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ssl_ctx is not None else None)
        if self._cert is not None:
            self._poll = asyncio.create_task(self._watch_files(self._cert))
            profile = self._cfg.profile
        else:
            profile = "insecure_http"
            log.warning("bundle endpoint: serving plain HTTP (insecure_http); federated peers cannot "
                        "authenticate it; use profile https_spiffe or https_web")
        log.info("bundle endpoint started", extra={"address": f"{self._cfg.bind_address}:{self.port}",
                                                   "profile": profile})

    async def close(self) -> None:
        """Stop accepting and stop watching the files."""
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    @staticmethod
    async def _watch_files(cert: ServingCertificate) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            cert.reload_if_changed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            response, head_only = await self._read_and_answer(reader)
            if response is not None:
                writer.write(encode(response, head_only=head_only))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
        except Exception:  # a listener logs and closes; it must not die on one request
            log.exception("bundle endpoint request failed")
        finally:
            self._open -= 1
            writer.close()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> tuple[Response | None, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return _error(431, "request head too large"), False
        except asyncio.IncompleteReadError:
            return None, False
        except TimeoutError:
            return _error(408, "request head not received in time"), False
        try:
            method, _path = parse_head(head[:-4])
        except HttpError as err:
            return _error(err.status, str(err)), False
        target = head.split(b" ", 2)[1].decode("ascii")  # parse_head checked it: ASCII, starts with "/"
        crls = await self._crls() if wants_crls(target) else None
        return respond(self._bundle(), crls, method, target), method == "HEAD"
