"""OIDC discovery provider: the JWT authorities as an OpenID Connect issuer, on its own listener.

Off unless ``[oidc]`` is configured. Relying parties (AWS, GCP, Azure, OpenAI, ...) fetch::

    GET <issuer path>/.well-known/openid-configuration   (also at /.well-known/openid-configuration)
    GET <issuer path>/keys                                (also at /keys): the JWT authorities as a JWKS

    provider = OidcProvider(cfg.oidc, bundle=ctx.ca.bundle)
    await provider.start()          # HTTPS from cert_file/key_file, reloaded when they change
    ...
    await provider.close()

Every document is a function of the configured issuer and the bundle only: the ``Host`` and
``X-Forwarded-*`` headers are never read, so the issuer is byte-identical however the
provider is reached (the mismatch SPIRE users hit when the issuer came from the Host header).
The listener is for the internet: the request head is bounded (line, header count, bytes)
and timed, bodies are refused, one request per connection, a cap on open connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_py import _jwk
from spiffe_py._json import dump
from spiffe_py.bundle import SpiffeBundle
from spiffe_server.httplistener import HttpListener, Response, ServingCertificate, error_response

log = logging.getLogger("spiffe_server.oidc")

DISCOVERY_PATH = "/.well-known/openid-configuration"
KEYS_PATH = "/keys"
# What this server's JWT keys can sign with (ca_key_type ec-p256, ec-p384, rsa-*).
SIGNING_ALGS = ("RS256", "ES256", "ES384")
DEFAULT_MAX_AGE = 300  # seconds, when the bundle carries no refresh hint

# -- pure documents -----------------------------------------------------------------------------


def issuer_prefix(issuer: str) -> str:
    """The issuer's path without a trailing slash ("" for ``https://host``)."""
    return urlsplit(issuer).path.rstrip("/")


def jwks_uri(issuer: str) -> str:
    """Where the JWKS lives: under the issuer, so a path issuer keeps its tenant prefix."""
    return issuer.rstrip("/") + KEYS_PATH


def discovery_document(issuer: str) -> bytes:
    """The OpenID Provider metadata a relying party needs to find and check JWT-SVID keys."""
    return dump({
        "issuer": issuer,
        "jwks_uri": jwks_uri(issuer),
        "authorization_endpoint": "",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": list(SIGNING_ALGS),
    }) + b"\n"


def _alg(key: object) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[_jwk.curve_name(key)]
    raise ValueError("unsupported jwt authority key type")


def jwks_document(bundle: SpiffeBundle) -> bytes:
    """The JWT authorities (prepared, active and old) as an RFC 7517 JWKS with ``use``, ``kid`` and ``alg``."""
    keys = [{**_jwk.key_to_jwk(key), "use": "sig", "kid": kid, "alg": _alg(key)}
            for kid, key in bundle.jwt_authorities.items()]
    return dump({"keys": keys}) + b"\n"


def cache_control(bundle: SpiffeBundle) -> str:
    """Caches may keep the documents for the bundle's refresh hint, as bundle consumers do."""
    hint = bundle.refresh_hint
    seconds = int(hint.total_seconds()) if hint is not None else DEFAULT_MAX_AGE
    return f"public, max-age={seconds}"


@dataclass(frozen=True, slots=True)
class Routes:
    """Which paths serve which document, fixed by the issuer."""

    discovery: frozenset[str]
    keys: frozenset[str]

    @classmethod
    def for_issuer(cls, issuer: str) -> Routes:
        prefix = issuer_prefix(issuer)
        return cls(discovery=frozenset({prefix + DISCOVERY_PATH, DISCOVERY_PATH}),
                   keys=frozenset({prefix + KEYS_PATH, KEYS_PATH}))


def respond(routes: Routes, discovery: bytes, bundle: SpiffeBundle, method: str, path: str) -> Response:
    """The response to one parsed request (no I/O)."""
    if path in routes.discovery:
        body = discovery
    elif path in routes.keys:
        body = jwks_document(bundle)
    else:
        return error_response(404, "not found")
    if method not in ("GET", "HEAD"):
        return Response(405, "text/plain; charset=utf-8", b"only GET and HEAD are supported\n",
                        extra_headers=(("Allow", "GET, HEAD"),))
    return Response(200, "application/json", body, cache_control=cache_control(bundle),
                    extra_headers=(("Access-Control-Allow-Origin", "*"),))


# -- the listener -------------------------------------------------------------------------------


class OidcProvider:
    """The discovery provider's listener; ``bundle`` returns the trust domain's current bundle."""

    def __init__(self, *, issuer: str, bind_address: str, bind_port: int, bundle: Callable[[], SpiffeBundle],
                 cert_file: Path | None = None, key_file: Path | None = None) -> None:
        self._issuer = issuer
        self._bind_address = bind_address
        self._bundle = bundle
        self._routes = Routes.for_issuer(issuer)
        self._discovery = discovery_document(issuer)
        cert = None if cert_file is None or key_file is None else ServingCertificate(cert_file, key_file,
                                                                                      label="oidc")
        self._listener = HttpListener("oidc", (bind_address, bind_port), self._answer, cert=cert)
        self._plain = cert is None

    @property
    def port(self) -> int:
        """The bound port (useful with ``bind_port = 0``)."""
        return self._listener.port

    async def start(self) -> None:
        """Start listening (HTTPS when a certificate is configured, else plain HTTP)."""
        await self._listener.start()
        if self._plain:
            log.warning("oidc: serving plain HTTP (insecure_http); only run this behind a TLS-terminating proxy")
        log.info("oidc discovery provider started", extra={"address": f"{self._bind_address}:{self.port}",
                                                           "issuer": self._issuer})

    async def close(self) -> None:
        """Stop accepting and stop watching the files."""
        await self._listener.close()

    async def _answer(self, method: str, target: str) -> Response:
        return respond(self._routes, self._discovery, self._bundle(), method, target.partition("?")[0])
