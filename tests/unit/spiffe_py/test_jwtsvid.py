"""JWT-SVID parsing, validation and signing (JWT-SVID.md, rules JWT-01..JWT-18).

Tokens with defects are built by :func:`raw_jws`, an independent signer written here with
``cryptography`` only, so the validator is not tested against itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from spiffe_py.bundle import BundleSet, JwtBundle
from spiffe_py.errors import BundleNotFoundError, InvalidJwtSvidError, JwtSvidExpiredError, SpiffeError
from spiffe_py.jwtsvid import ALLOWED_ALGS, JwtSvid, sign_jwt_svid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from tests.support.ca import generate_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
TD = TrustDomain.parse("example.org")
SUB = "spiffe://example.org/workload"
AUD = "spiffe://example.org/db"
P256, P384, P521 = generate_key("ec-p256"), generate_key("ec-p384"), generate_key("ec-p521")
RSA = generate_key("rsa-2048")
KEYS: dict[str, Any] = {"p256": P256, "p384": P384, "p521": P521, "rsa": RSA}
BUNDLES = BundleSet.of(JwtBundle(TD, {kid: key.public_key() for kid, key in KEYS.items()}))
ALG_KID = {"ES256": "p256", "ES384": "p384", "ES512": "p521"} | {
    f"{p}S{n}": "rsa" for p in "RP" for n in (256, 384, 512)
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hash(alg: str) -> hashes.HashAlgorithm:
    return {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]]


def raw_jws(header: dict[str, Any] | bytes, claims: dict[str, Any] | bytes, key: Any = None, alg: str = "") -> str:
    """A compact JWS with exactly the given header and claims, signed as ``alg`` with ``key``."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    body = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    signing_input = f"{_b64(head)}.{_b64(body)}".encode()
    if key is None:
        return signing_input.decode() + "."
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(_hash(alg))))
        signature = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    else:
        assert isinstance(key, rsa.RSAPrivateKey)
        pad: padding.AsymmetricPadding = padding.PKCS1v15()
        if alg.startswith("PS"):
            pad = padding.PSS(mgf=padding.MGF1(_hash(alg)), salt_length=_hash(alg).digest_size)
        signature = key.sign(signing_input, pad, _hash(alg))
    return f"{signing_input.decode()}.{_b64(signature)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": SUB, "aud": [AUD], "exp": T + 300, "iat": T}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def token(alg: str = "ES256", header: dict[str, Any] | None = None, **claim_changes: Any) -> str:
    kid = ALG_KID.get(alg, "p256")
    head = {"alg": alg, "kid": kid, "typ": "JWT"} if header is None else header
    return raw_jws(head, good_claims(**claim_changes), KEYS[kid], alg if alg in ALLOWED_ALGS else "ES256")


def validate(tok: str, audience: Any = AUD, now: datetime = NOW, bundles: Any = BUNDLES) -> JwtSvid:
    return JwtSvid.parse_and_validate(tok, bundles, audience, now=now)


@pytest.mark.parametrize("alg", sorted(ALLOWED_ALGS))
def test_accepts_every_allowed_alg(alg: str) -> None:
    """JWT-03: RS*, ES* (ES512 = P-521) and PS* verify."""
    svid = validate(token(alg))
    assert svid.spiffe_id == SpiffeId.parse(SUB)
    assert svid.audience == (AUD,)
    assert svid.expiry == datetime.fromtimestamp(T + 300, UTC)
    assert svid.issued_at == NOW
    assert svid.claims["sub"] == SUB


def _header(**changes: Any) -> dict[str, Any]:
    head: dict[str, Any] = {"alg": "ES256", "kid": "p256", "typ": "JWT"}
    head.update(changes)
    return {k: v for k, v in head.items() if v is not None}


INFINITE_EXP = f'{{"sub":"{SUB}","aud":"{AUD}","exp":1e400}}'.encode()  # json.loads gives float("inf")

# (case name with rule ID, token, expected message, expected .claim)
INVALID: list[tuple[str, str, str, str | None]] = [
    ("JWT-01-json-serialization", json.dumps({"payload": "e30", "signatures": []}), "jws compact", None),
    ("JWT-01-jwe-five-parts", "a.b.c.d.e", "jws compact", None),
    ("JWT-01-two-parts", "a.b", "jws compact", None),
    ("JWT-01-non-ascii", token() + "\u00e9", "jws compact", None),
    ("JWT-01-header-not-json", "e30x." + token().split(".", 1)[1], "token header is not valid", None),
    ("JWT-01-header-not-object", _b64(b"[1]") + "." + token().split(".", 1)[1], "token header is not valid", None),
    ("JWT-01-payload-not-json", raw_jws(_header(), b"{", P256, "ES256"), "token payload is not valid", None),
    ("JWT-01-payload-duplicate-claim", raw_jws(_header(), b'{"sub":"a","sub":"b"}', P256, "ES256"),
     "duplicate json key 'sub'", None),
    ("JWT-01-signature-not-base64url", token()[:-2] + "+/", "not valid base64url", None),
    ("JWT-02-crit-header", token(header=_header(crit=["exp"])), "parameter 'crit' is not allowed", None),
    ("JWT-02-jku-header", token(header=_header(jku="https://evil")), "parameter 'jku' is not allowed", None),
    ("JWT-02-jwk-header", token(header=_header(jwk={"kty": "EC"})), "parameter 'jwk' is not allowed", None),
    ("JWT-02-x5u-header", token(header=_header(x5u="https://evil")), "parameter 'x5u' is not allowed", None),
    ("JWT-02-x5c-header", token(header=_header(x5c=[])), "parameter 'x5c' is not allowed", None),
    ("JWT-02-cty-header", token(header=_header(cty="JWT")), "parameter 'cty' is not allowed", None),
    ("JWT-02-private-header", token(header=_header(foo=1)), "parameter 'foo' is not allowed", None),
    ("JWT-04-alg-none", raw_jws({"alg": "none", "typ": "JWT"}, good_claims()), "algorithm 'none'", None),
    ("JWT-04-alg-hs256", token(header=_header(alg="HS256")), "algorithm 'HS256'", None),
    ("JWT-04-alg-eddsa", token(header=_header(alg="EdDSA")), "algorithm 'EdDSA'", None),
    ("JWT-04-alg-lowercase", token(header=_header(alg="es256")), "algorithm 'es256'", None),
    ("JWT-04-alg-missing", token(header=_header(alg=None)), "algorithm 'None'", None),
    ("JWT-04-alg-not-string", token(header=_header(alg=["ES256"])), "unsupported token signature algorithm", None),
    ("JWT-04-alg-checked-first", raw_jws({"alg": "none", "crit": ["x"], "typ": "bad"}, b"not json"),
     "algorithm 'none'", None),
    ("JWT-04-es384-with-p256-key", raw_jws(_header(alg="ES384"), good_claims(), P256, "ES384"),
     "does not match the authority key type", None),
    ("JWT-04-rs256-with-ec-key", raw_jws(_header(alg="RS256"), good_claims(), RSA, "RS256"),
     "does not match the authority key type", None),
    ("JWT-04-es256-with-rsa-key", raw_jws(_header(kid="rsa"), good_claims(), P256, "ES256"),
     "does not match the authority key type", None),
    ("JWT-05-missing-kid", token(header=_header(kid=None)), "missing key id", None),
    ("JWT-05-empty-kid", token(header=_header(kid="")), "key id must be a non-empty string", None),
    ("JWT-05-unknown-kid", token(header=_header(kid="nope")), "no jwt authority found for key id 'nope'", None),
    ("JWT-06-bad-typ", token(header=_header(typ="at+jwt")), "typ must be JWT or JOSE", None),
    ("JWT-06-lowercase-typ", token(header=_header(typ="jwt")), "typ must be JWT or JOSE", None),
    ("JWT-07-missing-sub", token(sub=None), "missing the 'sub' claim", "sub"),
    ("JWT-07-sub-not-spiffe-id", token(sub="https://example.org/x"), "not a valid spiffe id", "sub"),
    ("JWT-07-sub-uppercase-td", token(sub="spiffe://EXAMPLE.org/x"), "not a valid spiffe id", "sub"),
    ("JWT-07-sub-not-string", token(sub=5), "'sub' claim must be a string", "sub"),
    ("JWT-08-missing-aud", token(aud=None), "missing the 'aud' claim", "aud"),
    ("JWT-08-empty-aud-list", token(aud=[]), "non-empty list of strings", "aud"),
    ("JWT-08-aud-number", token(aud=5), "non-empty list of strings", "aud"),
    ("JWT-08-aud-list-with-number", token(aud=[AUD, 5]), "non-empty list of strings", "aud"),
    ("JWT-09-aud-lacks-ours", token(aud=["spiffe://example.org/other"]), "does not include", "aud"),
    ("JWT-11-missing-exp", token(exp=None), "missing the 'exp' claim", "exp"),
    ("JWT-11-exp-string", token(exp=str(T + 300)), "'exp' claim must be a numeric date", "exp"),
    ("JWT-11-exp-bool", token(exp=True), "'exp' claim must be a numeric date", "exp"),
    ("JWT-11-exp-huge", token(exp=10**20), "'exp' claim is out of range", "exp"),
    ("JWT-11-exp-infinite", raw_jws(_header(), INFINITE_EXP, P256, "ES256"),
     "numeric date", "exp"),
    ("JWT-12-nbf-in-future", token(nbf=T + 31), "not valid yet", "nbf"),
    ("JWT-12-iat-in-future", token(iat=T + 31), "issued in the future", "iat"),
    ("JWT-12-iat-string", token(iat="now"), "'iat' claim must be a numeric date", "iat"),
    ("JWT-12-tampered-payload", token().split(".")[0] + "." + _b64(json.dumps(good_claims(sub=SUB + "x")).encode())
     + "." + token().split(".")[2], "signature is invalid", None),
    ("JWT-12-signature-wrong-length", token()[:-4], "signature is invalid", None),
    ("JWT-12-signed-by-other-key", raw_jws(_header(), good_claims(), generate_key(), "ES256"),
     "signature is invalid", None),
    ("JWT-12-rsa-signed-by-other-key", raw_jws(_header(alg="RS256", kid="rsa"), good_claims(), generate_key("rsa-2048"),
                                               "RS256"), "signature is invalid", None),
    ("JWT-12-ps256-signature-as-rs256", raw_jws(_header(alg="RS256", kid="rsa"), good_claims(), RSA, "PS256"),
     "signature is invalid", None),
    ("JWT-01-token-too-large", token(pad="x" * 16_384), "larger than 16384 bytes", None),
]  # fmt: skip


@pytest.mark.parametrize(("tok", "message", "claim"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_parse_and_validate_rejects(tok: str, message: str, claim: str | None) -> None:
    with pytest.raises(InvalidJwtSvidError, match=r"^jwtsvid: ") as info:
        validate(tok)
    assert message in str(info.value)
    assert info.value.claim == claim


def test_error_never_contains_the_token() -> None:
    tok = token(aud=["other"])
    with pytest.raises(InvalidJwtSvidError) as info:
        validate(tok)
    assert tok.split(".")[2] not in str(info.value)
    assert tok.split(".")[1] not in str(info.value)


def test_expired_token_raises_expired_error() -> None:
    """JWT-11: exp + leeway passed."""
    with pytest.raises(JwtSvidExpiredError, match=r"^jwtsvid: token has expired$") as info:
        validate(token(exp=T - 31))
    assert info.value.claim == "exp"


def test_leeway_applies_to_exp_nbf_iat() -> None:
    """App. A: small leeway (default 30s)."""
    assert validate(token(exp=T - 30, iat=T - 600, nbf=T + 30)).spiffe_id == SpiffeId.parse(SUB)
    with pytest.raises(JwtSvidExpiredError):
        JwtSvid.parse_and_validate(token(exp=T - 1), BUNDLES, AUD, now=NOW, leeway=timedelta(0))


def test_audience_forms() -> None:
    """JWT-08/09: aud may be a string; every expected audience must be present."""
    assert validate(token(aud=AUD)).audience == (AUD,)
    assert validate(token(aud=[AUD, "b"]), audience=["b", AUD]).audience == (AUD, "b")
    with pytest.raises(InvalidJwtSvidError, match="does not include 'c'"):
        validate(token(aud=[AUD, "b"]), audience=[AUD, "c"])
    with pytest.raises(ValueError, match="expected audience"):
        validate(token(), audience=[])


def test_jti_and_other_claims_are_kept() -> None:
    """JWT-16: jti is permitted (not tracked); unknown claims are carried through."""
    svid = validate(token(jti="abc", custom={"x": 1}))
    assert (svid.claims["jti"], svid.claims["custom"]) == ("abc", {"x": 1})


def test_typ_is_optional_and_jose_is_accepted() -> None:
    """JWT-06."""
    assert validate(token(header=_header(typ=None))).spiffe_id == SpiffeId.parse(SUB)
    assert validate(token(header=_header(typ="JOSE"))).spiffe_id == SpiffeId.parse(SUB)


def test_uses_only_the_bundle_of_the_subjects_trust_domain() -> None:
    """JWT-18: a key from another trust domain's bundle is not used, and no bundle means untrusted."""
    other = TrustDomain.parse("other.org")
    bundles = BundleSet.of(JwtBundle(TD, {"k": P256.public_key()}), JwtBundle(other, {"o": P384.public_key()}))
    foreign_sub = "spiffe://other.org/w"
    tok = raw_jws(_header(kid="k"), good_claims(sub=foreign_sub), P256, "ES256")
    with pytest.raises(InvalidJwtSvidError, match=r"key id 'k' in trust domain 'other\.org'"):
        validate(tok, bundles=bundles)
    ok = raw_jws(_header(alg="ES384", kid="o"), good_claims(sub=foreign_sub), P384, "ES384")
    assert validate(ok, bundles=bundles).spiffe_id == SpiffeId.parse(foreign_sub)
    with pytest.raises(BundleNotFoundError):
        validate(ok, bundles=BundleSet.of(JwtBundle(TD, {"o": P384.public_key()})))


def test_parse_insecure_checks_claims_not_signature() -> None:
    tok = raw_jws({"alg": "ES256", "typ": "JWT"}, good_claims(), generate_key(), "ES256")
    svid = JwtSvid.parse_insecure(tok, AUD, now=NOW)
    assert svid.spiffe_id == SpiffeId.parse(SUB)
    assert svid.token == tok
    assert tok not in repr(svid)
    with pytest.raises(JwtSvidExpiredError):
        JwtSvid.parse_insecure(tok, AUD, now=NOW + timedelta(hours=1))
    with pytest.raises(InvalidJwtSvidError, match="algorithm 'none'"):
        JwtSvid.parse_insecure(raw_jws({"alg": "none"}, good_claims()), AUD, now=NOW)


@pytest.mark.parametrize(("kid", "alg"), [("p256", "ES256"), ("p384", "ES384"), ("p521", "ES512"), ("rsa", "RS256")])
def test_sign_jwt_svid_round_trips(kid: str, alg: str) -> None:
    tok = sign_jwt_svid(good_claims(extra={"a": [1, 2]}), KEYS[kid], kid)
    header = json.loads(base64.urlsafe_b64decode(tok.split(".")[0] + "=="))
    assert header == {"alg": alg, "kid": kid, "typ": "JWT"}
    svid = validate(tok)
    assert svid.claims["extra"] == {"a": [1, 2]}


@pytest.mark.parametrize("missing", ["sub", "aud", "exp"])
def test_sign_jwt_svid_refuses_incomplete_claims(missing: str) -> None:
    with pytest.raises(ValueError, match=f"claims must include '{missing}'"):
        sign_jwt_svid(good_claims(**{missing: None}), P256, "p256")


def test_sign_jwt_svid_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="kid"):
        sign_jwt_svid(good_claims(), P256, "")
    with pytest.raises(SpiffeError):
        sign_jwt_svid(good_claims(sub="spiffe://example.org/"), P256, "k")
    with pytest.raises(ValueError, match="unsupported signing curve"):
        sign_jwt_svid(good_claims(), ec.generate_private_key(ec.SECP256K1()), "k")


def test_needs_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        validate(token(), now=datetime(2026, 3, 1))


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_spiffe_errors(text: str) -> None:
    with contextlib.suppress(SpiffeError):
        JwtSvid.parse_insecure(text, AUD, now=NOW)
    with contextlib.suppress(SpiffeError):
        validate(text)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300)
@given(
    st.dictionaries(st.sampled_from(["alg", "kid", "typ"]), _json | st.sampled_from(["ES256", "p256", "JWT"])),
    st.dictionaries(st.sampled_from(["sub", "aud", "exp", "nbf", "iat"]), _json | st.just(SUB) | st.just(T)),
)
def test_structured_tokens_raise_only_spiffe_errors(header: dict[str, Any], claims: dict[str, Any]) -> None:
    tok = raw_jws(header, claims, P256, "ES256")
    with contextlib.suppress(SpiffeError):
        JwtSvid.parse_insecure(tok, AUD, now=NOW)
    with contextlib.suppress(SpiffeError):
        validate(tok)


@pytest.mark.parametrize("kid", [None, 7, ""])
def test_kid_that_is_not_a_non_empty_string_is_refused(kid: object) -> None:
    """JWT-05 (found by the test above): ``"kid": null`` once crashed the bundle lookup with TypeError."""
    tok = raw_jws({"alg": "ES256", "kid": kid, "typ": "JWT"}, {"sub": SUB, "aud": [AUD], "exp": T}, P256, "ES256")
    with pytest.raises(InvalidJwtSvidError, match="key id must be a non-empty string"):
        validate(tok)
