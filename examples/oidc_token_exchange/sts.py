"""A local stand-in for a cloud STS that accepts JWT-SVIDs through OIDC discovery (AWS, GCP, Azure, OpenAI).

It does what the real ones do with a registered issuer, and nothing from our library:

- the issuer is registered ahead of time; the token's ``iss`` must equal it byte for byte;
- discovery comes from ``<issuer>/.well-known/openid-configuration`` over HTTPS (only for that
  issuer, never a URL taken from the token), its ``issuer`` must match, its ``jwks_uri`` is fetched;
- the JWS header's ``kid`` picks the key, ``alg`` must be one the key supports, the signature
  must verify (``cryptography`` directly);
- ``aud`` must contain the registered audience, ``exp`` must be in the future, ``iat`` and
  ``sub`` must be present; ``sub`` is what a trust policy would match.

The exchange itself is RFC 8693 (``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``,
form-encoded), as GCP's and OpenAI's token endpoints speak it; on success it returns an opaque
"provider" access token. Only the network half of the provider is stubbed.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPES = ("urn:ietf:params:oauth:token-type:jwt", "urn:ietf:params:oauth:token-type:id_token")
_CURVES = {"P-256": (ec.SECP256R1(), "ES256", hashes.SHA256()), "P-384": (ec.SECP384R1(), "ES384", hashes.SHA384())}


class Rejected(Exception):
    """The token is not acceptable; ``error`` is the RFC 6749 error code."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _int(part: str) -> int:
    return int.from_bytes(_b64(part), "big")


@dataclass
class Registration:
    """What an operator registers with the provider: the issuer URL and the audience it expects."""

    issuer: str
    audience: str
    tls: ssl.SSLContext  # the trust store used to reach the issuer (a public CA in real life)

    def _get(self, url: str) -> dict[str, Any]:
        with urllib.request.urlopen(url, context=self.tls, timeout=10) as resp:
            doc: dict[str, Any] = json.loads(resp.read(1 << 20))
            return doc

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if a real STS would accept it, else Rejected."""
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header, claims = json.loads(_b64(header_b64)), json.loads(_b64(payload_b64))
            signature = _b64(signature_b64)
        except ValueError as err:
            raise Rejected("invalid_request", "subject_token is not a compact JWS") from err
        if claims.get("iss") != self.issuer:
            raise Rejected("invalid_grant", "iss is not the registered issuer")
        discovery = self._get(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if discovery.get("issuer") != self.issuer or not str(discovery.get("jwks_uri", "")).startswith("https://"):
            raise Rejected("invalid_grant", "discovery document does not name the registered issuer")
        keys = [k for k in self._get(discovery["jwks_uri"]).get("keys", []) if k.get("kid") == header.get("kid")]
        if not header.get("kid") or len(keys) != 1:
            raise Rejected("invalid_grant", "no key in the issuer's JWKS for the token's kid")
        self._check_signature(keys[0], header.get("alg"), f"{header_b64}.{payload_b64}".encode(), signature)
        aud = claims.get("aud")
        if self.audience not in (aud if isinstance(aud, list) else [aud]):
            raise Rejected("invalid_grant", "aud does not contain the registered audience")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= time.time():
            raise Rejected("invalid_grant", "token expired")
        if "iat" not in claims or not claims.get("sub"):
            raise Rejected("invalid_grant", "iat and sub are required")
        return dict(claims)

    @staticmethod
    def _check_signature(jwk: dict[str, Any], alg: object, signed: bytes, signature: bytes) -> None:
        try:
            if jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
                curve, want_alg, digest = _CURVES[jwk["crv"]]
                if alg != want_alg:
                    raise Rejected("invalid_grant", "alg does not match the key")
                public = ec.EllipticCurvePublicNumbers(_int(jwk["x"]), _int(jwk["y"]), curve).public_key()
                half = len(signature) // 2
                der = encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                           int.from_bytes(signature[half:], "big"))
                public.verify(der, signed, ec.ECDSA(digest))
            elif jwk.get("kty") == "RSA" and alg == "RS256":
                rsa_key = rsa.RSAPublicNumbers(_int(jwk["e"]), _int(jwk["n"])).public_key()
                rsa_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            else:
                raise Rejected("invalid_grant", "unsupported key or alg")
        except InvalidSignature:
            raise Rejected("invalid_grant", "signature does not verify") from None


def serve(registration: Registration) -> ThreadingHTTPServer:
    """Start the stand-in STS on 127.0.0.1 (a thread); POST /v1/token does the exchange."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(min(length, 64 * 1024)).decode())
            field = {k: v[0] for k, v in form.items()}
            try:
                if self.path != "/v1/token" or field.get("grant_type") != TOKEN_EXCHANGE:
                    raise Rejected("unsupported_grant_type", "only RFC 8693 token exchange")
                if field.get("subject_token_type") not in JWT_TYPES or "subject_token" not in field:
                    raise Rejected("invalid_request", "subject_token (a JWT) is required")
                claims = registration.verify(field["subject_token"])
                status, body = 200, {"access_token": "provider-" + secrets.token_urlsafe(16),
                                     "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                                     "token_type": "Bearer", "expires_in": 3600, "subject": claims["sub"]}
            except Rejected as err:
                status, body = 400, {"error": err.error, "error_description": str(err)}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the example prints its own lines
            pass

    import threading

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
