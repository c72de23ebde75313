"""JWT-SVIDs: strict JWS compact parsing and validation, and signing (JWT-SVID.md).

No JOSE library is used: the only accepted form is a compact JWS with ``alg``/``kid``/``typ``::

    svid = JwtSvid.parse_and_validate(token, bundles, "spiffe://example.org/db", now=clock.now())
    print(svid.spiffe_id, svid.expiry)
    token = sign_jwt_svid({"sub": str(sid), "aud": ["db"], "exp": 1767225600}, key, kid="k1")

Every rejection raises :class:`InvalidJwtSvidError` (``.claim`` names the claim at fault, if any);
an expired token raises :class:`JwtSvidExpiredError`. A missing trust-domain bundle raises
:class:`BundleNotFoundError` (JWT-18).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from spiffe_py import _jwk
from spiffe_py._json import JsonError, dump, load_object
from spiffe_py.bundle import JwtBundleSource
from spiffe_py.errors import BundleNotFoundError, InvalidJwtSvidError, InvalidSpiffeIdError, JwtSvidExpiredError
from spiffe_py.spiffeid import SpiffeId

ALLOWED_ALGS = frozenset({"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"})
MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_LEEWAY = timedelta(seconds=30)
_ALLOWED_HEADER_PARAMS = frozenset({"alg", "kid", "typ"})  # JWT-02
_ALLOWED_TYPES = frozenset({"JWT", "JOSE"})  # JWT-06
_MAX_NUMERIC_DATE = 253402300799  # 9999-12-31T23:59:59Z
_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_ALG_FOR_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}


def _invalid(message: str, claim: str | None = None) -> InvalidJwtSvidError:
    return InvalidJwtSvidError(f"jwtsvid: {message}", claim)


class JwtSvidSource(Protocol):
    """Anything that can fetch a JWT-SVID for an audience."""

    def fetch_jwt_svid(self, audience: str | Iterable[str], spiffe_id: SpiffeId | None = None) -> JwtSvid:
        """A JWT-SVID for ``audience`` (optionally for a specific SPIFFE ID)."""
        ...


@dataclass(frozen=True, slots=True)
class _Jws:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class JwtSvid:
    """A parsed JWT-SVID; the token itself is kept out of ``repr``."""

    token: str = field(repr=False)
    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    expiry: datetime
    issued_at: datetime | None
    claims: Mapping[str, Any] = field(repr=False)
    hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))

    @classmethod
    def parse_and_validate(
        cls,
        token: str,
        bundles: JwtBundleSource,
        audience: str | Iterable[str],
        *,
        now: datetime,
        leeway: timedelta = DEFAULT_LEEWAY,
    ) -> JwtSvid:
        """Verify the signature with the bundle of ``sub``'s trust domain, then validate the claims."""
        expected = _expected_audience(audience)
        jws = _decode(token)
        if "kid" not in jws.header:  # JWT-05: required for interop (go-spiffe, py-spiffe)
            raise _invalid("token header is missing key id")
        spiffe_id = _subject(jws.claims)
        bundle = bundles.get_jwt_bundle_for_trust_domain(spiffe_id.trust_domain)  # JWT-18
        try:
            key = bundle.find(jws.header["kid"])
        except BundleNotFoundError as err:
            raise _invalid(
                f"no jwt authority found for key id {jws.header['kid'][:128]!r} "
                f"in trust domain {spiffe_id.trust_domain.name!r}"
            ) from err
        _verify_signature(jws, key)
        return cls._from_claims(token, jws.claims, expected, now=now, leeway=leeway)

    @classmethod
    def parse_insecure(
        cls, token: str, audience: str | Iterable[str], *, now: datetime, leeway: timedelta = DEFAULT_LEEWAY
    ) -> JwtSvid:
        """Parse and validate the claims WITHOUT checking the signature (for a token we were just given)."""
        expected = _expected_audience(audience)
        return cls._from_claims(token, _decode(token).claims, expected, now=now, leeway=leeway)

    @classmethod
    def _from_claims(
        cls, token: str, claims: dict[str, Any], expected: tuple[str, ...], *, now: datetime, leeway: timedelta
    ) -> JwtSvid:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if leeway < timedelta(0):
            raise ValueError("leeway must not be negative")
        spiffe_id = _subject(claims)
        audience = _audience(claims)
        for wanted in expected:  # JWT-09: every expected audience must be present
            if wanted not in audience:
                raise _invalid(f"token audience does not include {wanted[:256]!r}", "aud")
        expiry = _required(claims, "exp", _numeric_date(claims, "exp"))
        if now > expiry + leeway:  # JWT-11
            raise JwtSvidExpiredError("jwtsvid: token has expired", "exp")
        not_before = _numeric_date(claims, "nbf")
        if not_before is not None and now + leeway < not_before:
            raise _invalid("token is not valid yet", "nbf")
        issued_at = _numeric_date(claims, "iat")
        if issued_at is not None and now + leeway < issued_at:
            raise _invalid("token was issued in the future", "iat")
        return cls(token, spiffe_id, audience, expiry, issued_at, claims)


def _expected_audience(audience: str | Iterable[str]) -> tuple[str, ...]:
    expected = (audience,) if isinstance(audience, str) else tuple(audience)
    if not expected or not all(isinstance(a, str) and a for a in expected):
        raise ValueError("expected audience must be one or more non-empty strings")
    return expected


def _decode_part(part: str, what: str) -> dict[str, Any]:
    try:
        return load_object(_jwk.b64url_decode(part), max_bytes=MAX_TOKEN_BYTES)
    except (_jwk.JwkError, JsonError) as err:
        raise _invalid(f"token {what} is not valid: {err}") from err


def _decode(token: str) -> _Jws:
    """Split and decode a compact JWS, applying the header rules (JWT-01..JWT-06) first."""
    if not isinstance(token, str):
        raise TypeError("token must be a str")
    if len(token) > MAX_TOKEN_BYTES:
        raise _invalid(f"token is larger than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not token.isascii():  # JWT-01: JWS compact only (JWE has 5 parts)
        raise _invalid("token is not in jws compact serialization")
    header = _decode_part(parts[0], "header")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:  # JWT-03/04: checked before anything else
        raise _invalid(f"unsupported token signature algorithm {str(alg)[:32]!r}")
    for name in header:  # JWT-02
        if name not in _ALLOWED_HEADER_PARAMS:
            raise _invalid(f"token header parameter {name[:64]!r} is not allowed")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ not in _ALLOWED_TYPES):  # JWT-06
        raise _invalid(f"token header typ must be JWT or JOSE, got {str(typ)[:32]!r}")
    if "kid" in header and (not isinstance(header["kid"], str) or not header["kid"]):  # "kid": null too
        raise _invalid("token header key id must be a non-empty string")
    claims = _decode_part(parts[1], "payload")
    try:
        signature = _jwk.b64url_decode(parts[2])
    except _jwk.JwkError as err:
        raise _invalid("token signature is not valid base64url") from err
    return _Jws(header, claims, f"{parts[0]}.{parts[1]}".encode(), signature)


def _subject(claims: Mapping[str, Any]) -> SpiffeId:
    sub = claims.get("sub")
    if sub is None:
        raise _invalid("token is missing the 'sub' claim", "sub")
    if not isinstance(sub, str):
        raise _invalid("token 'sub' claim must be a string", "sub")
    try:
        return SpiffeId.parse(sub)  # JWT-07
    except InvalidSpiffeIdError as err:
        raise _invalid(f"token 'sub' claim is not a valid spiffe id: {err.reason}", "sub") from err


def _audience(claims: Mapping[str, Any]) -> tuple[str, ...]:
    aud = claims.get("aud")  # JWT-08: a string or a non-empty array of strings
    if aud is None:
        raise _invalid("token is missing the 'aud' claim", "aud")
    values = [aud] if isinstance(aud, str) else aud
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _invalid("token 'aud' claim must be a string or a non-empty list of strings", "aud")
    return tuple(values)


def _required(claims: Mapping[str, Any], name: str, value: datetime | None) -> datetime:
    if value is None:
        raise _invalid(f"token is missing the {name!r} claim", name)
    return value


def _numeric_date(claims: Mapping[str, Any], name: str) -> datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    # RFC 7519 §2 NumericDate: a JSON number (not a string, not a bool).
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"token {name!r} claim must be a numeric date", name)
    if not 0 <= value <= _MAX_NUMERIC_DATE:
        raise _invalid(f"token {name!r} claim is out of range", name)
    return datetime.fromtimestamp(value, UTC)


def _hash_for(alg: str) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    return _HASHES[alg[2:]]()


def _verify_signature(jws: _Jws, key: PublicKeyTypes) -> None:
    """Verify with ``key``, pinning ``alg`` to the key type (no alg/key confusion, JWT-04)."""
    alg: str = jws.header["alg"]
    try:
        if isinstance(key, ec.EllipticCurvePublicKey) and alg == _EC_ALG_FOR_CURVE.get(_curve(key)):
            size = (key.curve.key_size + 7) // 8
            if len(jws.signature) != 2 * size:
                raise _invalid("token signature is invalid")
            r, s = int.from_bytes(jws.signature[:size], "big"), int.from_bytes(jws.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), jws.signing_input, ec.ECDSA(_hash_for(alg)))
        elif isinstance(key, rsa.RSAPublicKey) and alg[:2] in ("RS", "PS"):
            key.verify(jws.signature, jws.signing_input, _rsa_padding(alg), _hash_for(alg))
        else:
            raise _invalid(f"token algorithm {alg!r} does not match the authority key type")
    except InvalidSignature as err:
        raise _invalid("token signature is invalid") from err


def _curve(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    try:
        return _jwk.curve_name(key)
    except ValueError:
        return ""


def _rsa_padding(alg: str) -> padding.AsymmetricPadding:
    if alg.startswith("PS"):  # RFC 7518 §3.5: MGF1 with the same hash, salt = hash length
        digest = _hash_for(alg)
        return padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    return padding.PKCS1v15()


def _alg_for_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    alg = _EC_ALG_FOR_CURVE.get(_curve(key))
    if alg is None:
        raise ValueError(f"unsupported signing curve {key.curve.name!r}")
    return alg


def sign_jwt_svid(claims: Mapping[str, Any], key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, kid: str) -> str:
    """Sign ``claims`` (which must hold sub, aud and exp) as a compact JWS; header alg, kid, typ=JWT."""
    if not kid:
        raise ValueError("kid must be a non-empty string")
    for required in ("sub", "aud", "exp"):  # JWT-07, JWT-08, JWT-11: never mint an invalid SVID
        if required not in claims:
            raise ValueError(f"claims must include {required!r}")
    SpiffeId.parse(claims["sub"])
    alg = _alg_for_key(key)
    header = _jwk.b64url_encode(dump({"alg": alg, "kid": kid, "typ": "JWT"}))
    payload = _jwk.b64url_encode(dump(dict(claims)))
    signing_input = f"{header}.{payload}".encode()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(signing_input, padding.PKCS1v15(), _hash_for(alg))
    else:
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_hash_for(alg))))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")  # JOSE raw r||s (RFC 7518 §3.4)
    return f"{header}.{payload}.{_jwk.b64url_encode(signature)}"
