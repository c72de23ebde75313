"""JWT-SVIDs: compact JWS parsing and validation (ValidateJWTSVID input, bearer tokens at a service)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from spiffe_agent.workloadapi.jwt import JwtSvidValidator
from spiffe_py.bundle import BundleSet
from spiffe_py.clock import ManualClock
from spiffe_py.errors import BundleNotFoundError, InvalidJwtSvidError, SpiffeError
from spiffe_py.jwtsvid import JwtSvid
from tests.fuzz._fuzz import CHEAP, MEDIUM, NOW, assert_outcome, attempt, b64url, json_bytes, json_values
from tests.support.ca import CA

_CA = CA.create("example.org", now=NOW)
_BUNDLE = _CA.spiffe_bundle()
_BUNDLES = BundleSet.of(_BUNDLE)
_KID = next(iter(_BUNDLE.jwt_authorities))
_EXP = int((NOW + timedelta(minutes=5)).timestamp())
_GOOD_CLAIMS = {"sub": "spiffe://example.org/web", "aud": ["svc"], "exp": _EXP}
_GOOD_TOKEN = _CA.sign_jwt(_GOOD_CLAIMS)


def _sign_any(claims: dict[str, Any]) -> str:
    """An ES256 token over any claims (the library's signer refuses to mint invalid SVIDs)."""
    key = _CA.jwt_signing_key()
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signing_input = f"{b64url(json_bytes({'alg': 'ES256', 'kid': _KID, 'typ': 'JWT'}))}.{b64url(json_bytes(claims))}"
    r, s = decode_dss_signature(key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

_numeric = st.one_of(st.integers(-(2**64), 2**64), st.floats(allow_nan=False), st.sampled_from([_EXP, 0]), json_values)
_headers = st.fixed_dictionaries({}, optional={
    "alg": st.sampled_from(["ES256", "RS256", "PS512", "none", "HS256", "es256"]) | json_values,
    "kid": st.sampled_from([_KID, "", "other"]) | json_values,
    "typ": st.sampled_from(["JWT", "JOSE", "jwt"]) | json_values,
    "crit": json_values,
})
_claims = st.fixed_dictionaries({}, optional={
    "sub": st.sampled_from(["spiffe://example.org/web", "spiffe://other.org/x", "spiffe://example.org", "x"])
    | json_values,
    "aud": st.sampled_from(["svc", ["svc"], [], ["svc", 1]]) | json_values,
    "exp": _numeric, "nbf": _numeric, "iat": _numeric, "jti": json_values,
})


@st.composite
def tokens(draw: st.DrawFn) -> str:
    """Compact-JWS-like text: encoded JSON parts, odd part counts, a real token edited, or any text."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.text(max_size=120))
    if kind == 1:  # the real token with one part replaced by arbitrary base64url/text
        parts = _GOOD_TOKEN.split(".")
        parts[draw(st.integers(0, 2))] = draw(st.one_of(st.binary(max_size=80).map(b64url), st.text(max_size=20)))
        return ".".join(parts)
    header = draw(_headers) if kind < 4 else draw(json_values)
    body = draw(_claims) if kind < 4 else draw(json_values)
    parts = [b64url(json_bytes(header)), b64url(json_bytes(body)), b64url(draw(st.binary(max_size=80)))]
    return ".".join(parts[: draw(st.sampled_from([3, 3, 3, 2, 5]))] + ([""] * 2 if kind == 3 else []))


@CHEAP
@given(tokens())
def test_parse_insecure_raises_only_invalid_jwt_svid(token: str) -> None:
    outcome = attempt(JwtSvid.parse_insecure, token, "svc", now=NOW)
    assert_outcome(outcome, JwtSvid, InvalidJwtSvidError)


@CHEAP
@given(tokens(), st.sampled_from(["svc", "other"]))
def test_parse_and_validate_raises_only_jwt_or_bundle_errors(token: str, audience: str) -> None:
    outcome = attempt(JwtSvid.parse_and_validate, token, _BUNDLES, audience, now=NOW)
    assert_outcome(outcome, JwtSvid, (InvalidJwtSvidError, BundleNotFoundError))


@MEDIUM
@given(_claims, st.dictionaries(st.text(max_size=8), json_values, max_size=3))
def test_signed_tokens_with_any_claims_raise_only_invalid_jwt_svid(claims: dict[str, Any],
                                                                    extra: dict[str, Any]) -> None:
    """Correctly signed tokens carrying hostile claims: every claim check runs after the signature."""
    token = _sign_any({**extra, **claims})
    outcome = attempt(JwtSvid.parse_and_validate, token, _BUNDLES, "svc", now=NOW)
    assert_outcome(outcome, JwtSvid, (InvalidJwtSvidError, BundleNotFoundError))


@CHEAP
@given(tokens(), st.text(min_size=1, max_size=40))
def test_agent_validator_raises_only_spiffe_errors(token: str, audience: str) -> None:
    """The agent's ValidateJWTSVID adapter: any token and any audience a workload sends."""
    outcome = attempt(JwtSvidValidator(ManualClock(NOW)).validate, token, audience, [_BUNDLE])
    assert_outcome(outcome, tuple, SpiffeError)


def test_harness_signs_tokens_the_validator_accepts() -> None:
    """The signed-token property above reaches the claim checks: a good claim set validates."""
    svid = JwtSvid.parse_and_validate(_sign_any(_GOOD_CLAIMS), _BUNDLES, "svc", now=NOW)
    assert str(svid.spiffe_id) == "spiffe://example.org/web"
