"""Local stand-ins for OpenAI's and Anthropic's token exchange and API (no network exists here).

They check what the real services document, and use nothing from our library:

- **OpenAI** ``POST https://auth.openai.com/oauth/token``: JSON RFC 8693 exchange
  (``grant_type`` token-exchange, ``subject_token_type`` jwt, ``identity_provider_id``,
  ``service_account_id``). ``POST https://api.openai.com/v1/chat/completions`` needs the issued
  bearer token.
- **OpenAI, X.509** ``POST https://mtls.auth.openai.com/oauth/token``: the same exchange with
  ``subject_token_type`` x509 and no subject token: the TLS client certificate is the credential,
  verified against the registered CA bundle (our trust domain's X.509 bundle) and matched by its
  SPIFFE ID; ``mtls.api.openai.com`` then wants the bearer token on a connection with that identity.
- **Anthropic** ``POST https://api.anthropic.com/v1/oauth/token``: JSON RFC 7523 jwt-bearer
  (``assertion``, ``federation_rule_id``, ``organization_id``, ``service_account_id``) with
  ``anthropic-beta: oidc-federation-2026-04-01``. ``POST /v1/messages`` needs the bearer token,
  ``anthropic-beta: oauth-2025-04-20`` and ``anthropic-version``.

Every subject token is judged like a registered identity provider would (``Registration`` from
examples/oidc_token_exchange/sts.py): our issuer's discovery document and JWKS fetched over
HTTPS, then ``kid``, ``alg``, signature, ``iss``, ``aud``, ``exp``, ``iat``, ``sub``; ``iat`` must
not be in the future. Access tokens expire after ``access_ttl`` seconds, so SDKs re-exchange
(and fetch a new JWT-SVID) during a run.

The SDKs are not modified or re-pointed: they keep their built-in URLs and reach the stand-ins
through an HTTPS CONNECT proxy (``HTTPS_PROXY``) that sends those host names to one local TLS
listener, whose certificate is signed by a throwaway root the SDK trusts through ``SSL_CERT_FILE``.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from examples.oidc_token_exchange.sts import TOKEN_EXCHANGE, Registration, Rejected, _b64

OPENAI_HOSTS = ("auth.openai.com", "api.openai.com", "mtls.auth.openai.com", "mtls.api.openai.com")
ANTHROPIC_HOSTS = ("api.anthropic.com",)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
X509_TOKEN_TYPE = "urn:openai:params:oauth:token-type:x509"
MAX_BODY = 64 * 1024


def web_pki(directory: Path, dns_names: list[str]) -> tuple[Path, Path, Path]:
    """A throwaway root CA and one serving certificate for ``dns_names``; returns (root, cert, key) paths."""
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in web root")])
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(root_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]), critical=False)
            .sign(root_key, hashes.SHA256()))
    paths = directory / "web-root.pem", directory / "web.pem", directory / "web.key"
    paths[0].write_bytes(root.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(paths[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return paths


@dataclass
class Ledger:
    """What the stand-ins saw; tests and the example assert on it."""

    exchanges: list[dict[str, Any]] = field(default_factory=list)  # accepted subject tokens' claims
    exchange_refusals: list[str] = field(default_factory=list)
    api_ok: int = 0
    api_refusals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"exchanges": list(self.exchanges), "exchange_refusals": list(self.exchange_refusals),
                    "api_ok": self.api_ok, "api_refusals": list(self.api_refusals)}


@dataclass
class Federation:
    """What the operator registered with the provider for our issuer."""

    openai_registration: Registration
    anthropic_registration: Registration
    identity_provider_id: str = "idp_spiffe_example"
    service_account_id: str = "sa_billing"
    federation_rule_id: str = "fdrl_spiffe_example"
    organization_id: str = "00000000-0000-4000-8000-000000000001"
    anthropic_service_account_id: str = "svac_billing"
    subject: str = ""  # the SPIFFE ID the rule binds; "" accepts any sub
    x509_ca_pem: bytes = b""  # the X.509 CA bundle registered for the mTLS variant ("" = no client certificates)
    access_ttl: float = 8.0


class _Refused(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error = status, error


class StandIns:
    """The HTTPS listener (both providers) plus the CONNECT proxy in front of it."""

    def __init__(self, federation: Federation, cert_file: Path, key_file: Path) -> None:
        self.federation = federation
        self.ledger = Ledger()
        self._tokens: dict[str, tuple[str, float]] = {}  # access token -> (provider, monotonic expiry)
        self._bound: dict[str, str] = {}  # mTLS access token -> the SPIFFE ID it was issued to
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert_file, key_file)
        if federation.x509_ca_pem:  # ask every client for a certificate; only the mtls hosts require one
            self._tls.verify_mode = ssl.CERT_OPTIONAL
            self._tls.load_verify_locations(cadata=federation.x509_ca_pem.decode())
        self.https = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.https.daemon_threads = True
        self.proxy = _ConnectProxy(self.https.server_address[1], OPENAI_HOSTS + ANTHROPIC_HOSTS)
        for target in (self.https.serve_forever, self.proxy.serve_forever):
            threading.Thread(target=target, daemon=True).start()

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}"

    def close(self) -> None:
        self.https.shutdown()
        self.https.server_close()
        self.proxy.close()

    # -- the two providers ------------------------------------------------------------------

    def _verify(self, registration: Registration, token: object) -> dict[str, Any]:
        if not isinstance(token, str):
            raise _Refused(400, "invalid_request", "the subject token must be a string")
        try:
            claims = registration.verify(token)
        except Rejected as err:
            raise _Refused(400 if err.error == "invalid_request" else 401, err.error, str(err)) from err
        if not isinstance(claims.get("iat"), int | float) or claims["iat"] > time.time() + 60:
            raise _Refused(401, "invalid_grant", "iat is missing or in the future")
        header = json.loads(_b64(token.split(".")[0]))
        if self.federation.subject and claims["sub"] != self.federation.subject:
            raise _Refused(401, "invalid_grant", "sub does not match the federation rule")
        return {**claims, "kid": header.get("kid")}

    def _issue(self, provider: str, claims: dict[str, Any]) -> dict[str, Any]:
        token = f"{provider}-at-" + secrets.token_urlsafe(24)
        with self.ledger.lock:
            self._tokens[token] = (provider, time.monotonic() + self.federation.access_ttl)
            self.ledger.exchanges.append({"provider": provider, **claims})
        return {"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer", "expires_in": self.federation.access_ttl}

    def openai_exchange(self, body: dict[str, Any]) -> dict[str, Any]:
        fed = self.federation
        if body.get("grant_type") != TOKEN_EXCHANGE:
            raise _Refused(400, "unsupported_grant_type", "grant_type must be token-exchange")
        if body.get("subject_token_type") != JWT_TOKEN_TYPE:
            raise _Refused(400, "invalid_request", "subject_token_type must be jwt")
        if (body.get("identity_provider_id"), body.get("service_account_id")) != (
                fed.identity_provider_id, fed.service_account_id):
            raise _Refused(400, "invalid_target", "unknown identity provider or service account")
        return self._issue("openai", self._verify(fed.openai_registration, body.get("subject_token")))

    def openai_x509_exchange(self, body: dict[str, Any], peer: x509.Certificate | None) -> dict[str, Any]:
        fed = self.federation
        spiffe_id = _peer_spiffe_id(peer)
        if body.get("grant_type") != TOKEN_EXCHANGE or body.get("subject_token_type") != X509_TOKEN_TYPE:
            raise _Refused(400, "invalid_request", "x509 token exchange expected")
        if (body.get("identity_provider_id"), body.get("service_account_id")) != (
                fed.identity_provider_id, fed.service_account_id):
            raise _Refused(400, "invalid_target", "unknown identity provider or service account")
        if fed.subject and spiffe_id != fed.subject:
            raise _Refused(401, "invalid_grant", "the client certificate's SPIFFE ID does not match")
        assert peer is not None
        reply = self._issue("openai-x509", {"sub": spiffe_id, "serial": peer.serial_number, "iat": time.time(),
                                            "not_after": peer.not_valid_after_utc.timestamp()})
        self._bound[reply["access_token"]] = spiffe_id
        return reply

    def openai_x509_chat(self, body: dict[str, Any], headers: Any, peer: x509.Certificate | None) -> dict[str, Any]:
        spiffe_id = _peer_spiffe_id(peer)
        token = headers.get("Authorization", "").removeprefix("Bearer ")
        if self._bound.get(token) != spiffe_id:
            raise _Refused(401, "invalid_api_key", "the token is bound to another client certificate")
        return self.openai_chat(body, headers, provider="openai-x509")

    def anthropic_exchange(self, body: dict[str, Any], headers: Any) -> dict[str, Any]:
        fed = self.federation
        if "oidc-federation-2026-04-01" not in headers.get("anthropic-beta", ""):
            raise _Refused(400, "invalid_request", "anthropic-beta oidc-federation-2026-04-01 is required")
        if body.get("grant_type") != JWT_BEARER:
            raise _Refused(400, "unsupported_grant_type", "grant_type must be jwt-bearer")
        if (body.get("federation_rule_id"), body.get("organization_id"), body.get("service_account_id")) != (
                fed.federation_rule_id, fed.organization_id, fed.anthropic_service_account_id):
            raise _Refused(401, "invalid_grant", "no federation rule matches")
        return self._issue("anthropic", self._verify(fed.anthropic_registration, body.get("assertion")))

    def _bearer(self, provider: str, headers: Any) -> None:
        auth = headers.get("Authorization", "")
        entry = self._tokens.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None
        if entry is None or entry[0] != provider:
            raise _Refused(401, "invalid_api_key", "unknown bearer token")
        if entry[1] <= time.monotonic():
            raise _Refused(401, "invalid_api_key", "access token expired")

    def openai_chat(self, body: dict[str, Any], headers: Any, provider: str = "openai") -> dict[str, Any]:
        self._bearer(provider, headers)
        if not isinstance(body.get("model"), str) or not isinstance(body.get("messages"), list):
            raise _Refused(400, "invalid_request_error", "model and messages are required")
        return {"id": "chatcmpl-" + secrets.token_hex(8), "object": "chat.completion", "created": int(time.time()),
                "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                                                     "message": {"role": "assistant", "content": "hello, workload"}}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}

    def anthropic_messages(self, body: dict[str, Any], headers: Any) -> dict[str, Any]:
        self._bearer("anthropic", headers)
        if "oauth-2025-04-20" not in headers.get("anthropic-beta", "") or not headers.get("anthropic-version"):
            raise _Refused(400, "invalid_request_error", "bearer auth needs anthropic-beta oauth and anthropic-version")
        if not isinstance(body.get("max_tokens"), int) or not isinstance(body.get("messages"), list):
            raise _Refused(400, "invalid_request_error", "max_tokens and messages are required")
        return {"id": "msg_" + secrets.token_hex(8), "type": "message", "role": "assistant", "model": body.get("model"),
                "content": [{"type": "text", "text": "hello, workload"}], "stop_reason": "end_turn",
                "stop_sequence": None, "usage": {"input_tokens": 3, "output_tokens": 3}}

    def dispatch(self, host: str, path: str, body: dict[str, Any], headers: Any,
                 peer: x509.Certificate | None = None) -> dict[str, Any]:
        routes = {("auth.openai.com", "/oauth/token"): lambda: self.openai_exchange(body),
                  ("mtls.auth.openai.com", "/oauth/token"): lambda: self.openai_x509_exchange(body, peer),
                  ("mtls.api.openai.com", "/v1/chat/completions"): lambda: self.openai_x509_chat(body, headers, peer),
                  ("api.openai.com", "/v1/chat/completions"): lambda: self.openai_chat(body, headers),
                  ("api.anthropic.com", "/v1/oauth/token"): lambda: self.anthropic_exchange(body, headers),
                  ("api.anthropic.com", "/v1/messages"): lambda: self.anthropic_messages(body, headers)}
        route = routes.get((host, path.split("?", 1)[0]))
        if route is None:
            raise _Refused(404, "not_found", f"no such endpoint {host}{path}")
        return route()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standins = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                self.request = standins._tls.wrap_socket(self.request, server_side=True)
                super().setup()

            def do_POST(self) -> None:
                host = (self.headers.get("Host") or "").split(":", 1)[0]
                exchange = self.path.endswith("/oauth/token")
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if not 0 < length <= MAX_BODY:
                        raise _Refused(413 if length else 411, "invalid_request", "body missing or over 64 KiB")
                    body = json.loads(self.rfile.read(length))
                    if not isinstance(body, dict):
                        raise _Refused(400, "invalid_request", "body must be a JSON object")
                    der = self.request.getpeercert(binary_form=True)
                    peer = x509.load_der_x509_certificate(der) if der else None
                    status, reply = 200, standins.dispatch(host, self.path, body, self.headers, peer)
                    if not exchange:
                        with standins.ledger.lock:
                            standins.ledger.api_ok += 1
                except (_Refused, ValueError) as err:
                    status = err.status if isinstance(err, _Refused) else 400
                    code = err.error if isinstance(err, _Refused) else "invalid_request"
                    reply = {"error": code, "error_description": str(err)} if exchange else \
                        {"error": {"type": code, "message": str(err)}}
                    with standins.ledger.lock:
                        (standins.ledger.exchange_refusals if exchange else standins.ledger.api_refusals).append(
                            f"{host}{self.path}: {status} {err}")
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(data)))
                if exchange:  # one exchange per connection: each one is a fresh TLS handshake
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # the ledger is the record
                pass

        return Handler


def _peer_spiffe_id(peer: x509.Certificate | None) -> str:
    """The URI SAN of a client certificate the TLS layer already verified against the registered CA."""
    if peer is None:
        raise _Refused(401, "invalid_client", "a client certificate is required on this host")
    try:
        uris = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise _Refused(401, "invalid_client", "the client certificate carries no single SPIFFE ID")
    return uris[0]


class _ConnectProxy:
    """An HTTPS CONNECT proxy that sends the provider host names (port 443) to one local port."""

    def __init__(self, target_port: int, hosts: tuple[str, ...]) -> None:
        self._target = ("127.0.0.1", target_port)
        self._hosts = hosts
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closed = False

    def serve_forever(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            host = parts[1].rsplit(":", 1)[0] if len(parts) == 3 and parts[0] == "CONNECT" else ""
            if host not in self._hosts or not parts[1].endswith(":443"):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            with socket.create_connection(self._target, timeout=10) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                conn.settimeout(None)
                upstream.settimeout(None)
                _pipe(conn, upstream)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _pipe(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(peers), [], [], 60)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


def sdk_env(standins: StandIns, web_root: Path) -> dict[str, str]:
    """The environment an unmodified SDK needs to reach the stand-ins under their real host names."""
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update(HTTPS_PROXY=standins.proxy_url, SSL_CERT_FILE=str(web_root), NO_PROXY="")
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        env.pop(key, None)
    return env
