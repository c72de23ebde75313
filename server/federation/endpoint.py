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

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from spiffe_py.bundle import SpiffeBundle
from spiffe_server.config import FederationEndpointConfig
from spiffe_server.httplistener import HttpListener, Response, ServingCertificate, error_response
from spiffe_server.revocation import crls_to_pem

log = logging.getLogger("spiffe_server.federation.endpoint")

BUNDLE_PATHS = frozenset({"/", "/bundle"})


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
    return error_response(404, "not found: try / or /crl")


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
        cert = None
        if not cfg.insecure_http:
            cert_file, key_file = svid_files
            if cfg.profile == "https_web":
                assert cfg.cert_file is not None and cfg.key_file is not None
                cert_file, key_file = cfg.cert_file, cfg.key_file
            cert = ServingCertificate(cert_file, key_file, label="bundle endpoint")
        self._listener = HttpListener("bundle endpoint", (cfg.bind_address, cfg.bind_port), self._answer, cert=cert)

    @property
    def port(self) -> int:
        """The bound port (useful with ``bind_port = 0``)."""
        return self._listener.port

    async def start(self) -> None:
        """Start listening."""
        await self._listener.start()
        profile = self._cfg.profile
        if self._cfg.insecure_http:
            profile = "insecure_http"
            log.warning("bundle endpoint: serving plain HTTP (insecure_http); federated peers cannot "
                        "authenticate it; use profile https_spiffe or https_web")
        log.info("bundle endpoint started", extra={"address": f"{self._cfg.bind_address}:{self.port}",
                                                   "profile": profile})

    async def close(self) -> None:
        """Stop accepting and stop watching the files."""
        await self._listener.close()

    async def _answer(self, method: str, target: str) -> Response:
        crls = await self._crls() if wants_crls(target) else None
        return respond(self._bundle(), crls, method, target)
