"""RFC 8693 token exchange at ``POST /token`` and the JWKS of the broker's signing key (pure core).

The subject is a JWT-SVID (``subject_token_type`` ``urn:ietf:params:oauth:token-type:jwt``) for
the broker's audience, a token this broker issued (a delegation step), or, with no
``subject_token``, the client's X509-SVID (mTLS). ``actor_token`` (the calling agent's JWT-SVID)
adds an ``act`` claim; the subject's own ``act`` chain nests under it (RFC 8693 §4.1), at most
``max_act_depth`` deep. The result is a JWT signed by the broker (ES256, key in
``/.well-known/jwks.json``) scoped to one ``audience``/``resource``, living no longer than the
policy's ``max_ttl``, ``[token_exchange] max_ttl`` and every SVID it derives from. Errors are the
RFC 6749 §5.2 / RFC 8693 §2.2.2 codes, one table below::

    signer = Signer.generate()
    req = parse_request(form)                        # ExchangeError(invalid_request) if malformed
    claims, ttl = plan ... ; token = signer.sign(claims)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_py import _jwk
from spiffe_py.bundle import JwtBundle
from spiffe_py.errors import SpiffeError
from spiffe_py.jwtsvid import JwtSvid, sign_jwt_svid
from spiffe_py.spiffeid import SpiffeId, TrustDomain

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # noqa: S105 - a type name, not a secret
MAX_FORM_BYTES = 64 * 1024
MAX_FIELD_CHARS = 16 * 1024
_FIELDS = frozenset({"grant_type", "subject_token", "subject_token_type", "actor_token", "actor_token_type",
                     "audience", "resource", "requested_token_type", "scope"})


class ExchangeError(SpiffeError):
    """A refused exchange; ``code`` is the RFC 6749 §5.2 / RFC 8693 §2.2.2 error code."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


# error code -> HTTP status (RFC 6749 §5.2: 400, or 401 for a client that failed to authenticate)
OAUTH_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "invalid_client": 401,
    "invalid_grant": 400,
    "unauthorized_client": 400,
    "unsupported_grant_type": 400,
    "invalid_scope": 400,
    "invalid_target": 400,
    "temporarily_unavailable": 503,
}


def error_body(err: ExchangeError) -> tuple[int, dict[str, str]]:
    """(status, JSON body) of a refusal."""
    return OAUTH_STATUS.get(err.code, 400), {"error": err.code, "error_description": err.description}


@dataclass(frozen=True, slots=True)
class ExchangeRequest:
    """A parsed token exchange request."""

    subject_token: str | None
    actor_token: str | None
    target: str  # the audience (or resource) asked for


def parse_request(form: Mapping[str, list[str]]) -> ExchangeRequest:
    """Check the form fields (each at most once, bounded); ExchangeError names the one at fault."""
    for name, values in form.items():
        if name in _FIELDS and len(values) > 1:
            raise ExchangeError("invalid_request", f"{name} must appear at most once")
        if any(len(v) > MAX_FIELD_CHARS for v in values):
            raise ExchangeError("invalid_request", f"{name[:64]} is too long")

    def one(name: str) -> str | None:
        values = form.get(name)
        return values[0] if values else None

    if one("grant_type") != GRANT_TYPE:
        raise ExchangeError("unsupported_grant_type", f"grant_type must be {GRANT_TYPE}")
    subject, actor = one("subject_token"), one("actor_token")
    if subject is not None and one("subject_token_type") != JWT_TYPE:
        raise ExchangeError("invalid_request", f"subject_token_type must be {JWT_TYPE}")
    if subject is None and one("subject_token_type") is not None:
        raise ExchangeError("invalid_request", "subject_token_type without subject_token")
    if actor is not None and one("actor_token_type") != JWT_TYPE:
        raise ExchangeError("invalid_request", f"actor_token_type must be {JWT_TYPE}")
    if actor is None and one("actor_token_type") is not None:
        raise ExchangeError("invalid_request", "actor_token_type without actor_token")
    requested = one("requested_token_type")
    if requested not in (None, ACCESS_TOKEN_TYPE, JWT_TYPE):
        raise ExchangeError("invalid_request", f"requested_token_type must be {ACCESS_TOKEN_TYPE}")
    audience, resource = one("audience"), one("resource")
    if audience and resource and audience != resource:
        raise ExchangeError("invalid_target", "audience and resource name different targets; ask for one")
    target = audience or resource
    if not target:
        raise ExchangeError("invalid_request", "audience or resource is required")
    return ExchangeRequest(subject, actor, target)


def act_depth(act: object) -> int:
    """How many actors a nested ``act`` claim holds."""
    depth = 0
    while isinstance(act, Mapping):
        depth += 1
        act = act.get("act")
    return depth


def nest_act(actor: SpiffeId, prior: object) -> dict[str, Any]:
    """``{"sub": actor, "act": prior}``: the current actor outermost (RFC 8693 §4.1)."""
    claim: dict[str, Any] = {"sub": str(actor)}
    if isinstance(prior, Mapping):
        claim["act"] = dict(prior)
    return claim


def token_claims(*, issuer: str, subject: SpiffeId, audience: str, now: datetime, ttl: timedelta,
                 act: Mapping[str, Any] | None, source: Mapping[str, str], jti: str | None = None) -> dict[str, Any]:
    """The issued token's claims; ``source`` names the SVID(s) it derives from, so revoking them refuses it."""
    iat = int(now.timestamp())
    claims: dict[str, Any] = {"iss": issuer, "sub": str(subject), "aud": audience, "iat": iat, "nbf": iat,
                              "exp": iat + max(1, int(ttl.total_seconds())), "jti": jti or secrets.token_hex(16),
                              "spiffe_source": dict(source)}
    if act:
        claims["act"] = dict(act)
    return claims


class Signer:
    """The broker's token signing key (P-256, in memory only: tokens live minutes, a restart re-keys)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, kid: str) -> None:
        self._key = key
        self.kid = kid

    @classmethod
    def generate(cls) -> Signer:
        """A fresh key and key id."""
        return cls(ec.generate_private_key(ec.SECP256R1()), secrets.token_hex(16))

    def __repr__(self) -> str:
        return f"Signer(kid={self.kid!r})"

    def kids(self) -> frozenset[str]:
        """Key ids whose tokens are ours."""
        return frozenset({self.kid})

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A compact JWS (ES256, kid, typ JWT)."""
        return sign_jwt_svid(claims, self._key, self.kid)

    def jwks(self) -> dict[str, Any]:
        """The JWKS document (``use: sig``, ``alg: ES256``)."""
        jwk = {**_jwk.key_to_jwk(self._key.public_key()), "kid": self.kid, "use": "sig", "alg": "ES256"}
        return {"keys": [jwk]}

    def verify(self, token: str, audience: str, *, now: datetime) -> JwtSvid:
        """A token this broker issued for ``audience`` (signature and times checked); ExchangeError if not."""
        class _Own:
            def __init__(self, key: ec.EllipticCurvePublicKey, kid: str) -> None:
                self._key, self._kid = key, kid

            def get_jwt_bundle_for_trust_domain(self, td: TrustDomain) -> JwtBundle:
                return JwtBundle(td, {self._kid: self._key})

        try:
            return JwtSvid.parse_and_validate(token, _Own(self._key.public_key(), self.kid), audience, now=now)
        except (SpiffeError, ValueError) as err:
            raise ExchangeError("invalid_grant", f"subject_token refused: {err}") from None
