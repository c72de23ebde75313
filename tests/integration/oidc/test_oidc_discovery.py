"""The OIDC discovery provider, checked as a relying party would: a real server over HTTPS.

Only independent libraries judge the documents and tokens: PyJWT's ``PyJWKClient`` and joserfc.
The listener's certificate comes from a throwaway web PKI the clients trust explicitly.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tests.support.server_proc import ServerProc, free_port
from tests.support.web_pki import WebPki

TD = "spiffe://example.org"
AUDIENCE = "sts.example.test"


@dataclass
class Provider:
    server: ServerProc
    pki: WebPki
    port: int
    issuer: str
    cert_file: Path
    key_file: Path

    def fetch(self, url: str) -> bytes:
        with urllib.request.urlopen(url, context=self.pki.client_context(), timeout=10) as resp:
            assert resp.status == 200
            body: bytes = resp.read()
            return body

    def discovery(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.fetch(self.issuer + "/.well-known/openid-configuration"))
        return doc

    def mint(self, path: str = "/relying-party") -> str:
        token: str = self.server.cli_json("jwt", "mint", "--spiffe-id", TD + path, "--audience", AUDIENCE,
                                          "--ttl", "120")["token"]
        return token

    def raw(self, request: bytes) -> bytes:
        """Send ``request`` as is over TLS and return everything the provider answers."""
        ctx = self.pki.client_context()
        with socket.create_connection(("127.0.0.1", self.port), timeout=15) as sock, \
                ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(request)
            chunks = []
            while chunk := tls.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    tmp = tmp_path_factory.mktemp("oidc")
    pki = WebPki.create()
    cert_file, key_file = tmp / "oidc.pem", tmp / "oidc.key"
    pki.write_serving(cert_file, key_file, ["localhost"])
    port = free_port()
    issuer = f"https://localhost:{port}/tenant-a"
    config = (f'[oidc]\nbind_address = "127.0.0.1"\nbind_port = {port}\nissuer = "{issuer}"\n'
              f'cert_file = "{cert_file}"\nkey_file = "{key_file}"\n')
    with ServerProc.start(config_text=config) as srv:
        yield Provider(srv, pki, port, issuer, cert_file, key_file)


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def test_discovery_document_names_the_issuer_and_keys_under_it(provider: Provider) -> None:
    doc = provider.discovery()
    assert doc["issuer"] == provider.issuer
    assert doc["jwks_uri"] == provider.issuer + "/keys"
    assert doc["authorization_endpoint"] == ""
    assert doc["response_types_supported"] == ["id_token"]
    assert doc["subject_types_supported"] == ["public"]
    assert "ES256" in doc["id_token_signing_alg_values_supported"]
    # also at the host root, identically (clients that drop the issuer path)
    root = f"https://localhost:{provider.port}/.well-known/openid-configuration"
    assert provider.fetch(root) == provider.fetch(provider.issuer + "/.well-known/openid-configuration")
    jwks = json.loads(provider.fetch(doc["jwks_uri"]))
    assert jwks["keys"] and all(k["use"] == "sig" and k["kid"] and k["alg"] == "ES256" for k in jwks["keys"])


def test_pyjwt_jwk_client_verifies_a_minted_jwt_svid_through_discovery(provider: Provider) -> None:
    token = provider.mint()
    client = jwt.PyJWKClient(provider.discovery()["jwks_uri"], ssl_context=provider.pki.client_context())
    key = client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=provider.issuer,
                        options={"require": ["iss", "sub", "aud", "exp", "iat"]})
    assert claims["sub"] == TD + "/relying-party"
    assert claims["iss"] == provider.issuer


def _joserfc_validate(provider: Provider, token: str) -> dict[str, Any]:
    doc = provider.discovery()
    key_set = KeySet.import_key_set(json.loads(provider.fetch(doc["jwks_uri"])))
    decoded = jose_jwt.decode(token, key_set, algorithms=doc["id_token_signing_alg_values_supported"])
    registry = jose_jwt.JWTClaimsRegistry(iss={"essential": True, "value": doc["issuer"]},
                                          aud={"essential": True, "value": AUDIENCE},
                                          sub={"essential": True}, exp={"essential": True})
    registry.validate(decoded.claims)
    assert decoded.header["kid"]
    return dict(decoded.claims)


def test_joserfc_validates_the_same_token_from_the_same_discovery_document(provider: Provider) -> None:
    token = provider.mint()
    claims = _joserfc_validate(provider, token)
    assert claims["iss"] == provider.issuer and claims["sub"] == TD + "/relying-party"
    # a token from another key is refused: the check can fail
    forged = jwt.encode(dict(claims), _other_key(), algorithm="ES256", headers={"kid": jwt.get_unverified_header(
        token)["kid"]})
    with pytest.raises(Exception, match="signature"):
        _joserfc_validate(provider, forged)


def _other_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    return ec.generate_private_key(ec.SECP256R1())


def test_tokens_of_a_rotated_jwt_key_verify_without_a_restart(provider: Provider) -> None:
    old_token = provider.mint()
    client = jwt.PyJWKClient(provider.discovery()["jwks_uri"], ssl_context=provider.pki.client_context())
    old_kid = client.get_signing_key_from_jwt(old_token).key_id
    provider.server.cli("localauthority", "jwt", "prepare")
    # published before it signs anything, so relying parties that cache the JWKS see it in time
    prepared = {k["kid"] for k in json.loads(provider.fetch(provider.issuer + "/keys"))["keys"]} - {old_kid}
    assert len(prepared) == 1
    provider.server.cli("localauthority", "jwt", "activate")
    new_token = provider.mint("/after-rotation")
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    assert new_kid != old_kid and {new_kid} == prepared
    # a relying party whose cache expired fetches discovery and the JWKS again
    client = jwt.PyJWKClient(provider.discovery()["jwks_uri"], ssl_context=provider.pki.client_context())
    key = client.get_signing_key_from_jwt(new_token)
    assert key.key_id == new_kid
    claims = jwt.decode(new_token, key.key, algorithms=["ES256"], audience=AUDIENCE, issuer=provider.issuer)
    assert claims["sub"] == TD + "/after-rotation"
    assert _joserfc_validate(provider, new_token)["sub"] == TD + "/after-rotation"
    assert _joserfc_validate(provider, old_token)["sub"] == TD + "/relying-party"  # the old key is still published


@pytest.mark.parametrize("path", ["/tenant-a/.well-known/openid-configuration", "/tenant-a/keys"])
def test_documents_are_byte_identical_whatever_the_host_header(provider: Provider, path: str) -> None:
    """The issuer never comes from Host or X-Forwarded-Host (SPIRE #5480, #7038)."""
    answers = []
    for host in ("localhost", "attacker.example:9999"):
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-Host: {host}\r\n"
                   f"X-Forwarded-Proto: http\r\n\r\n").encode()
        answers.append(provider.raw(request).partition(b"\r\n\r\n")[2])
    assert answers[0] == answers[1]
    if "openid-configuration" in path:
        assert json.loads(answers[0])["issuer"] == provider.issuer


def test_head_answers_headers_only_with_cache_control_from_the_refresh_hint(provider: Provider) -> None:
    conn = http.client.HTTPSConnection("localhost", provider.port, context=provider.pki.client_context(),
                                       timeout=10)
    try:
        conn.request("GET", "/tenant-a/keys")
        get = conn.getresponse()
        body = get.read()
        conn.close()
        conn.request("HEAD", "/tenant-a/keys")
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        assert head.getheader("Content-Length") == str(len(body))
        bundle = json.loads(provider.server.cli("bundle", "show", "--format", "spiffe").stdout)
        hint = bundle["spiffe_refresh_hint"]
        assert head.getheader("Cache-Control") == get.getheader("Cache-Control") == f"public, max-age={hint}"
        assert head.getheader("Content-Type") == "application/json"
    finally:
        conn.close()


@pytest.mark.parametrize(("request_bytes", "status"), [
    (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    (b"GET /tenant-a/.well-known/openid-configuration/../x HTTP/1.1\r\n\r\n", 404),
    (b"POST /keys HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400),
    (b"DELETE /keys HTTP/1.1\r\n\r\n", 405),
    (b"GET http://evil/keys HTTP/1.1\r\n\r\n", 400),
    (b"GET /keys HTTP/2.0\r\n\r\n", 505),
    (b"\x00\xff garbage\r\n\r\n", 400),
    (b"GET /keys HTTP/1.1\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n", 431),
    (b"GET /keys HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 431),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
])
def test_bad_requests_get_4xx_and_the_provider_keeps_serving(provider: Provider, request_bytes: bytes,
                                                             status: int) -> None:
    assert _status(provider.raw(request_bytes)) == status
    assert provider.discovery()["issuer"] == provider.issuer


def test_serving_certificate_is_reloaded_when_its_files_change(provider: Provider) -> None:
    before = _peer_serial(provider)
    new_cert = provider.pki.write_serving(provider.cert_file, provider.key_file, ["localhost"])
    deadline = time.monotonic() + 10
    while _peer_serial(provider) != new_cert.serial_number:
        assert time.monotonic() < deadline, "the new serving certificate was not picked up"
        time.sleep(0.2)
    assert new_cert.serial_number != before
    assert provider.discovery()["issuer"] == provider.issuer


def _peer_serial(provider: Provider) -> int:
    from cryptography import x509
    ctx = provider.pki.client_context()
    with socket.create_connection(("127.0.0.1", provider.port), timeout=10) as sock, \
            ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_plain_http_only_behind_the_explicit_flag(tmp_path: Path) -> None:
    port = free_port()
    issuer = "https://oidc.example.test"
    config = f'[oidc]\nbind_port = {port}\nissuer = "{issuer}"\ninsecure_http = true\n'
    with ServerProc.start(config_text=config) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/.well-known/openid-configuration", headers={"Host": "elsewhere.example"})
        doc = json.loads(conn.getresponse().read())
        conn.close()
        assert doc["issuer"] == issuer and doc["jwks_uri"] == issuer + "/keys"
        token = srv.cli_json("jwt", "mint", "--spiffe-id", TD + "/w", "--audience", "a")["token"]
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == issuer
        assert "plain HTTP" in srv.log_text()


def test_server_refuses_jwt_issuer_that_differs_from_the_oidc_issuer(tmp_path: Path) -> None:
    config = ('jwt_issuer = "https://a.example"\n[oidc]\nissuer = "https://b.example"\ninsecure_http = true\n')
    with pytest.raises(AssertionError, match=r"differs from oidc\.issuer"):
        ServerProc.start(config_text=config).close()

