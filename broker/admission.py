"""Who is calling: a client X509-SVID (mTLS) or ``Authorization: Bearer <JWT-SVID>``, checked per request.

Checked on every request, not only at the TLS handshake (a keep-alive connection outlives a
revocation): the SVID verifies against the bundle of its own trust domain, has not expired, and
neither its serial / jti nor its signing key is revoked, as pushed by the local agent::

    admission = Admission(audience="spiffe://example.org/broker", issuer_kids=lambda: signer.kids())
    caller = admission.from_certificate(der, x509_bundles, revocations, now=now)
    caller = admission.from_bearer(token, jwt_bundles, revocations, now=now)

Verification results are memoised by certificate or token (and bundle object), so a warm request
pays a dictionary lookup plus the time and revocation checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from spiffe_broker.errors import ExchangeOnlyError, RevokedCallerError, UnauthenticatedError
from spiffe_py._memo import Memo
from spiffe_py.bundle import JwtBundleSource, X509BundleSource
from spiffe_py.errors import SpiffeError
from spiffe_py.jwtsvid import JwtSvid, _decode
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import RevocationState
from spiffe_py.x509svid import verify_x509_svid

MEMO_SIZE = 4096
MAX_TOKEN_CHARS = 16 * 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its SPIFFE ID, how it proved it, and what could revoke it."""

    spiffe_id: SpiffeId
    method: str  # "x509" | "jwt"
    expires_at: datetime
    serial: int | None = None
    authority_key_id: str | None = None
    jti: str | None = None
    kid: str | None = None

    def revocation_claim(self) -> dict[str, str]:
        """What a token derived from this SVID carries so that revoking the SVID refuses the token too."""
        if self.method == "x509" and self.serial is not None:
            return {"x509_serial": f"{self.serial:x}"}
        return {"jti": self.jti or ""}


@dataclass(frozen=True, slots=True)
class _VerifiedCert:
    spiffe_id: SpiffeId
    serial: int
    not_after: datetime
    aki: str | None


def _aki(cert: x509.Certificate) -> str | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    key_id = ext.value.key_identifier
    return None if key_id is None else key_id.hex()


def check_not_revoked(caller: Caller, revocations: RevocationState, *, now: datetime) -> None:
    """Refuse an expired or revoked caller (RevokedCallerError)."""
    if now >= caller.expires_at:
        raise RevokedCallerError("auth: the caller's SVID has expired", rule="svid.expired")
    if caller.serial is not None and revocations.x509_revoked(caller.serial, caller.authority_key_id):
        raise RevokedCallerError("auth: the caller's X509-SVID has been revoked", rule="svid.revoked")
    if caller.method == "jwt" and revocations.jwt_revoked(caller.jti, caller.kid):
        raise RevokedCallerError("auth: the caller's JWT-SVID has been revoked", rule="svid.revoked")


class Admission:
    """Authenticates callers; ``issuer_kids`` are the broker's own signing keys (its tokens are exchange-only)."""

    def __init__(self, *, audience: str, issuer: str, issuer_kids: Callable[[], frozenset[str]]) -> None:
        self.audience = audience
        self._issuer = issuer
        self._issuer_kids = issuer_kids
        # keyed by the credential; the value keeps the bundle object it was verified against, and a hit
        # counts only for that same object (a new bundle from the agent is a new object)
        self._certs: Memo[bytes, tuple[object, _VerifiedCert]] = Memo(MEMO_SIZE)
        self._tokens: Memo[tuple[str, str], tuple[object, JwtSvid, Caller]] = Memo(MEMO_SIZE)

    def from_certificate(self, der: bytes, bundles: X509BundleSource, revocations: RevocationState, *,
                         now: datetime) -> Caller:
        """The caller behind a client certificate the TLS handshake accepted."""
        hit = self._certs.get(der)
        if hit is not None and hit[0] is bundles:
            verified = hit[1]
        else:
            try:
                cert = x509.load_der_x509_certificate(der)
                spiffe_id = verify_x509_svid([cert], bundles, now=now)
            except (SpiffeError, ValueError) as err:
                raise UnauthenticatedError(f"auth: client certificate refused: {err}", rule="svid.x509") from None
            verified = _VerifiedCert(spiffe_id, cert.serial_number, cert.not_valid_after_utc, _aki(cert))
            self._certs.put(der, (bundles, verified))
        caller = Caller(verified.spiffe_id, "x509", verified.not_after, serial=verified.serial,
                        authority_key_id=verified.aki)
        check_not_revoked(caller, revocations, now=now)
        return caller

    def verify_jwt(self, token: str, bundles: JwtBundleSource, audience: str, *,
                   now: datetime) -> tuple[JwtSvid, Caller]:
        """A JWT-SVID for ``audience``, signature and claims checked (memoised), and its caller.

        Raises UnauthenticatedError (ExchangeOnlyError for a token this broker issued); the caller's
        expiry and revocation are for the caller of this method to check, on every use.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise UnauthenticatedError("auth: bearer token is too large", rule="svid.jwt")
        hit = self._tokens.get((token, audience))
        if hit is not None and hit[0] is bundles:
            return hit[1], hit[2]
        self._refuse_own(token)
        try:
            svid = JwtSvid.parse_and_validate(token, bundles, audience, now=now)
        except (SpiffeError, ValueError) as err:
            raise UnauthenticatedError(f"auth: bearer JWT-SVID refused: {err}", rule="svid.jwt") from None
        caller = jwt_caller(svid, token)
        self._tokens.put((token, audience), (bundles, svid, caller))
        return svid, caller

    def from_bearer(self, token: str, bundles: JwtBundleSource, revocations: RevocationState, *,
                    now: datetime) -> Caller:
        """The caller behind ``Authorization: Bearer <JWT-SVID>`` (aud must be the broker's audience)."""
        _, caller = self.verify_jwt(token, bundles, self.audience, now=now)
        check_not_revoked(caller, revocations, now=now)
        return caller

    def _refuse_own(self, token: str) -> None:
        """A token the broker issued is exchange-only: it never authenticates a proxied request."""
        try:
            jws = _decode(token)
        except SpiffeError:
            return  # not a JWS at all: parse_and_validate says why
        if jws.header.get("kid") in self._issuer_kids() or jws.claims.get("iss") == self._issuer:
            raise ExchangeOnlyError(
                "auth: a token issued by this broker can only be exchanged at /token, never used upstream",
                rule="exchange_only")


def jwt_caller(svid: JwtSvid, token: str) -> Caller:
    """The caller a validated JWT-SVID names."""
    jti = svid.claims.get("jti")
    try:
        kid = _decode(token).header.get("kid")
    except SpiffeError:
        kid = None
    return Caller(svid.spiffe_id, "jwt", svid.expiry, jti=jti if isinstance(jti, str) else None,
                  kid=kid if isinstance(kid, str) else None)
