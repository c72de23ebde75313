"""JWK <-> public key conversion and strict base64url (private; callers wrap :class:`JwkError`).

jwk = key_to_jwk(public_key)          # {"kty": "EC", "crv": "P-256", "x": ..., "y": ...}
key = key_from_jwk(jwk)               # None for a key type we do not know (to be ignored)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

JwtPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192

# JWK "crv" name -> (curve class, coordinate length in bytes); RFC 7518 §6.2.1
CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "P-256": (ec.SECP256R1, 32),
    "P-384": (ec.SECP384R1, 48),
    "P-521": (ec.SECP521R1, 66),
}
_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class JwkError(ValueError):
    """A JWK (or base64url value) is malformed."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: object) -> bytes:
    """Strict base64url without padding; anything else raises JwkError."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise JwkError("invalid base64url value")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as err:
        raise JwkError("invalid base64url value") from err


def curve_name(key: ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) -> str:
    """JWK curve name of an EC key; ValueError for curves JOSE does not define."""
    try:
        return _CURVE_NAMES[key.curve.name]
    except KeyError:
        raise ValueError(f"unsupported curve {key.curve.name!r}") from None


def _uint(value: int, size: int | None = None) -> str:
    return b64url_encode(value.to_bytes(size or max(1, (value.bit_length() + 7) // 8), "big"))


def key_to_jwk(key: object) -> dict[str, str]:
    """Public JWK members for an EC (P-256/384/521) or RSA public key."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        crv = curve_name(key)
        size = CURVES[crv][1]
        numbers = key.public_numbers()
        return {"kty": "EC", "crv": crv, "x": _uint(numbers.x, size), "y": _uint(numbers.y, size)}
    if isinstance(key, rsa.RSAPublicKey):
        rsa_numbers = key.public_numbers()
        return {"kty": "RSA", "n": _uint(rsa_numbers.n), "e": _uint(rsa_numbers.e)}
    raise TypeError("only ec and rsa public keys can be written as a jwk")


def key_from_jwk(jwk: Mapping[str, Any]) -> JwtPublicKey | None:
    """The public key of a JWK; None when ``kty``/``crv`` is unknown (TDB-10: ignore such keys)."""
    kty = jwk.get("kty")
    if kty == "EC":
        return _ec_from_jwk(jwk)
    if kty == "RSA":
        return _rsa_from_jwk(jwk)
    return None


def _ec_from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey | None:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in CURVES:
        return None
    curve, size = CURVES[crv]
    x, y = b64url_decode(jwk.get("x")), b64url_decode(jwk.get("y"))
    if len(x) != size or len(y) != size:
        raise JwkError(f"ec jwk coordinates have the wrong length for {crv}")
    numbers = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve())
    try:
        return numbers.public_key()
    except ValueError as err:
        raise JwkError("ec jwk point is not on the curve") from err


def _rsa_from_jwk(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    n = int.from_bytes(b64url_decode(jwk.get("n")), "big")
    e = int.from_bytes(b64url_decode(jwk.get("e")), "big")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS:
        raise JwkError(f"rsa jwk modulus must be {MIN_RSA_BITS}..{MAX_RSA_BITS} bits")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError as err:
        raise JwkError("invalid rsa jwk") from err
