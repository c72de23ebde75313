"""spiffe_server.oidc pure parts: documents, routes, request-head parsing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_py.bundle import SpiffeBundle
from spiffe_py.spiffeid import TrustDomain
from spiffe_server import httplistener, oidc

TD = TrustDomain("example.org")


def _bundle(hint: int | None = 60) -> SpiffeBundle:
    return SpiffeBundle(TD, jwt_authorities={"ec": ec.generate_private_key(ec.SECP384R1()).public_key(),
                                             "rsa": rsa.generate_private_key(65537, 2048).public_key()},
                        refresh_hint=None if hint is None else timedelta(seconds=hint))


def test_discovery_document_fields_for_a_path_issuer() -> None:
    doc = json.loads(oidc.discovery_document("https://h.example/tenant-a"))
    assert doc == {"issuer": "https://h.example/tenant-a", "jwks_uri": "https://h.example/tenant-a/keys",
                   "authorization_endpoint": "", "response_types_supported": ["id_token"],
                   "subject_types_supported": ["public"],
                   "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"]}
    # a trailing slash is kept in "issuer" (byte-equal to "iss") but not doubled in jwks_uri
    assert json.loads(oidc.discovery_document("https://h.example/"))["jwks_uri"] == "https://h.example/keys"


def test_jwks_has_use_kid_and_alg_per_key() -> None:
    keys = {k["kid"]: k for k in json.loads(oidc.jwks_document(_bundle()))["keys"]}
    assert (keys["ec"]["alg"], keys["ec"]["crv"], keys["ec"]["use"]) == ("ES384", "P-384", "sig")
    assert (keys["rsa"]["alg"], keys["rsa"]["kty"], keys["rsa"]["use"]) == ("RS256", "RSA", "sig")


def test_routes_and_methods() -> None:
    routes = oidc.Routes.for_issuer("https://h.example/tenant-a")
    discovery = oidc.discovery_document("https://h.example/tenant-a")
    bundle = _bundle(hint=42)
    for path in ("/tenant-a/.well-known/openid-configuration", "/.well-known/openid-configuration"):
        response = oidc.respond(routes, discovery, bundle, "GET", path)
        assert (response.status, response.body, response.cache_control) == (200, discovery, "public, max-age=42")
    assert oidc.respond(routes, discovery, bundle, "HEAD", "/tenant-a/keys").status == 200
    assert oidc.respond(routes, discovery, bundle, "PUT", "/keys").status == 405
    assert oidc.respond(routes, discovery, bundle, "GET", "/tenant-b/keys").status == 404
    assert oidc.respond(routes, discovery, _bundle(hint=None), "GET", "/keys").cache_control == "public, max-age=300"
    head = httplistener.encode(oidc.respond(routes, discovery, bundle, "HEAD", "/keys"), head_only=True)
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: " in head


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /keys HTTP/1.1\r\nHost: a", None),
    (b"GET /keys?x=1 HTTP/1.0", None),
    (b"GET /keys", 400),
    (b"GET  /keys HTTP/1.1", 400),
    (b"GET keys HTTP/1.1", 400),
    (b"GET /keys HTTP/1.1\r\nbad header", 400),
    (b"GET /keys HTTP/1.1\r\nBad Name: x", 400),
    (b"GET /keys HTTP/1.1\r\nTransfer-Encoding: chunked", 400),
    (b"GET /keys HTTP/1.1\r\nContent-Length: 5", 400),
    (b"GET /k\xc3\xa9ys HTTP/1.1", 400),
    (b"GET /keys HTTP/3", 505),
    (b"GET /" + b"a" * httplistener.MAX_REQUEST_LINE + b" HTTP/1.1", 414),
    (b"GET /keys HTTP/1.1" + b"\r\nA: b" * (httplistener.MAX_HEADERS + 1), 431),
])
def test_parse_head(head: bytes, status: int | None) -> None:
    if status is None:
        method, target = httplistener.parse_head(head)
        assert (method, target.partition("?")[0]) == ("GET", "/keys")
        return
    with pytest.raises(httplistener.HttpError) as info:
        httplistener.parse_head(head)
    assert info.value.status == status
