"""Interop with PyJWT: it verifies our JWT-SVIDs with keys from our JWKS; we verify its tokens."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jwt
import pytest

from spiffe_py.bundle import BundleSet, JwtBundle, SpiffeBundle
from spiffe_py.errors import InvalidJwtSvidError
from spiffe_py.jwtsvid import JwtSvid, sign_jwt_svid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from tests.support.ca import KeyType, generate_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
SUB = "spiffe://example.org/web"
AUD = "spiffe://example.org/db"
FAR_EXP = 4102444800  # 2100-01-01: PyJWT checks exp against the wall clock
CLAIMS = {"sub": SUB, "aud": [AUD], "exp": FAR_EXP, "iat": int(NOW.timestamp())}
REQUIRE = {"require": ["exp", "aud", "sub"]}  # JWT-11: PyJWT checks exp only when told to require it


@pytest.mark.parametrize(("key_type", "alg"), [("ec-p256", "ES256"), ("ec-p384", "ES384"), ("ec-p521", "ES512"),
                                               ("rsa-2048", "RS256")])  # fmt: skip
def test_pyjwt_verifies_our_token_with_key_from_our_jwks(key_type: KeyType, alg: str) -> None:
    key = generate_key(key_type)
    token = sign_jwt_svid(CLAIMS, key, "k1")
    jwks = JwtBundle(TD, {"k1": key.public_key()}).to_jwks()
    their_key = jwt.PyJWKSet.from_json(jwks.decode())["k1"]
    assert jwt.get_unverified_header(token) == {"alg": alg, "kid": "k1", "typ": "JWT"}
    claims = jwt.decode(token, their_key, algorithms=[alg], audience=AUD, options=REQUIRE)
    assert claims == CLAIMS


def test_pyjwt_reads_jwt_keys_of_a_full_spiffe_bundle() -> None:
    """The jwt-svid JWKs of our SPIFFE bundle document are standard JWKs (x509-svid ones are filtered by use)."""
    key = generate_key()
    bundle = SpiffeBundle(TD, jwt_authorities={"k1": key.public_key()}, sequence_number=3)
    jwks = json.loads(bundle.to_json())
    their_key = jwt.PyJWK(jwks["keys"][0])
    token = sign_jwt_svid(CLAIMS, key, "k1")
    assert jwt.decode(token, their_key, algorithms=["ES256"], audience=AUD, options=REQUIRE)["sub"] == SUB


@pytest.mark.parametrize(("key_type", "alg"), [("ec-p256", "ES256"), ("rsa-2048", "RS256"), ("rsa-2048", "PS256"),
                                               ("ec-p384", "ES384")])  # fmt: skip
def test_we_verify_pyjwt_tokens(key_type: KeyType, alg: str) -> None:
    key = generate_key(key_type)
    token = jwt.encode(CLAIMS, key, algorithm=alg, headers={"kid": "k1"})
    bundles = BundleSet.of(JwtBundle(TD, {"k1": key.public_key()}))
    svid = JwtSvid.parse_and_validate(token, bundles, AUD, now=NOW)
    assert svid.spiffe_id == SpiffeId.parse(SUB)
    assert dict(svid.claims) == CLAIMS


def test_we_reject_pyjwt_token_with_extra_header() -> None:
    """JWT-02: PyJWT lets callers add headers; a JWT-SVID may not carry them."""
    key = generate_key()
    token = jwt.encode(CLAIMS, key, algorithm="ES256", headers={"kid": "k1", "jku": "https://evil.example/jwks"})
    with pytest.raises(InvalidJwtSvidError, match="'jku' is not allowed"):
        JwtSvid.parse_and_validate(token, BundleSet.of(JwtBundle(TD, {"k1": key.public_key()})), AUD, now=NOW)


def test_we_reject_pyjwt_hs256_token_signed_with_public_key_bytes() -> None:
    """JWT-04: the classic HS256/public-key confusion is refused on alg alone."""
    key = generate_key()
    token = jwt.encode(CLAIMS, "a-secret-of-32-bytes-or-more-xxxxxxxx", algorithm="HS256", headers={"kid": "k1"})
    with pytest.raises(InvalidJwtSvidError, match="algorithm 'HS256'"):
        JwtSvid.parse_and_validate(token, BundleSet.of(JwtBundle(TD, {"k1": key.public_key()})), AUD, now=NOW)
