"""SPIFFE bundle JSON (JWKS), bundle maps and X.509 bundles in PEM/DER: federation and Workload API input."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from hypothesis import example, given
from hypothesis import strategies as st

from spiffe_py.bundle import JwtBundle, SpiffeBundle, X509Bundle, parse_bundle_map
from spiffe_py.errors import InvalidBundleError
from spiffe_py.spiffeid import TrustDomain
from tests.fuzz._fuzz import CHEAP, MEDIUM, NOW, assert_outcome, attempt, b64url, json_bytes, json_scalars, json_values
from tests.fuzz._fuzz import mutate as mutate_bytes
from tests.support.ca import CA

TD = TrustDomain.parse("example.org")
_CA = CA.create("example.org", now=NOW)
_BUNDLE = _CA.spiffe_bundle(sequence_number=7)
_VALID_JSON = _BUNDLE.to_json()
_CERT_DER = _CA.cert.public_bytes(serialization.Encoding.DER)
_EC = _CA.jwt_bundle().to_jwks()

_good_jwk_members: list[dict[str, Any]] = [dict(k) for k in json.loads(_VALID_JSON)["keys"]]

_b64_values = st.one_of(
    st.binary(max_size=70).map(b64url),
    st.sampled_from(["", "=", "A", "AA==", "é", "a b", "+/"]),
    json_scalars,
)
_x5c_values = st.one_of(
    st.just([base64.b64encode(_CERT_DER).decode()]),
    st.lists(st.one_of(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), st.text(max_size=12),
                       json_scalars), max_size=3),
    st.text(max_size=8),
    json_scalars,
)


@st.composite
def jwks_keys(draw: st.DrawFn) -> Any:
    """A JWK: a real one with members replaced or removed, or one built from odd member values."""
    if draw(st.booleans()):
        jwk = dict(draw(st.sampled_from(_good_jwk_members)))
        for name in draw(st.lists(st.sampled_from(["use", "kty", "crv", "x", "y", "n", "e", "kid", "x5c"]),
                                  max_size=3)):
            if draw(st.booleans()):
                jwk.pop(name, None)
            else:
                jwk[name] = draw(_b64_values if name in "xyne" else _x5c_values if name == "x5c" else json_values)
        return jwk
    return draw(st.one_of(
        st.fixed_dictionaries({}, optional={
            "use": st.sampled_from(["x509-svid", "jwt-svid", "sig", ""]) | json_scalars,
            "kty": st.sampled_from(["EC", "RSA", "OKP", "oct"]) | json_scalars,
            "crv": st.sampled_from(["P-256", "P-384", "P-521", "X25519"]) | json_scalars,
            "x": _b64_values, "y": _b64_values, "n": _b64_values, "e": _b64_values,
            "kid": st.text(max_size=10) | json_scalars,
            "x5c": _x5c_values,
        }),
        json_values,
    ))


@st.composite
def bundle_documents(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        doc["keys"] = draw(st.lists(jwks_keys(), max_size=4)) if draw(st.integers(0, 5)) else draw(json_values)
    for name in ("spiffe_sequence", "spiffe_refresh_hint"):
        if draw(st.booleans()):
            doc[name] = draw(st.one_of(st.integers(-1, 2**65), json_scalars))
    doc.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return json_bytes(doc)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    return mutate_bytes(data, draw)


_any_bundle_bytes = st.one_of(bundle_documents(), mutated(_VALID_JSON), mutated(_EC), st.binary(max_size=200))


@MEDIUM
@given(_any_bundle_bytes)
# x5c holding non-ASCII text: base64.b64decode raised a bare ValueError
@example(json_bytes({"keys": [{"use": "x509-svid", "kty": "EC", "x5c": ["\u00e9"]}]}))
def test_spiffe_bundle_parse_raises_only_invalid_bundle(data: bytes) -> None:
    outcome = attempt(SpiffeBundle.parse, TD, data)
    assert_outcome(outcome, SpiffeBundle, InvalidBundleError)
    if isinstance(outcome, SpiffeBundle):  # what parsed must serialise and parse back the same
        again = SpiffeBundle.parse(TD, outcome.to_json())
        assert again.x509_authorities == outcome.x509_authorities
        assert dict(again.jwt_authorities).keys() == dict(outcome.jwt_authorities).keys()


@MEDIUM
@given(_any_bundle_bytes)
def test_jwt_bundle_parse_jwks_raises_only_invalid_bundle(data: bytes) -> None:
    assert_outcome(attempt(JwtBundle.parse_jwks, TD, data), JwtBundle, InvalidBundleError)


@st.composite
def bundle_maps(draw: st.DrawFn) -> bytes:
    names = st.one_of(st.sampled_from(["example.org", "spiffe://example.org", "EXAMPLE.org", "a", ""]),
                      st.text(max_size=12))
    inner = draw(st.dictionaries(names, st.one_of(bundle_documents().map(json.loads), json_values),
                                 max_size=3))
    return json_bytes({"trust_domains": inner} if draw(st.integers(0, 5)) else draw(json_values))


@MEDIUM
@given(st.one_of(bundle_maps(), st.binary(max_size=100)))
def test_parse_bundle_map_raises_only_invalid_bundle(data: bytes) -> None:
    assert_outcome(attempt(parse_bundle_map, data), dict, InvalidBundleError)


_PEM = _CA.x509_bundle().to_pem()


@CHEAP
@given(st.one_of(mutated(_PEM), mutated(_CERT_DER), st.binary(max_size=300),
                 st.text(max_size=200).map(lambda t: f"-----BEGIN {t}-----\n".encode(errors="surrogatepass"))))
def test_x509_bundle_parse_raises_only_invalid_bundle(data: bytes) -> None:
    assert_outcome(attempt(X509Bundle.parse_pem, TD, data), X509Bundle, InvalidBundleError)
    assert_outcome(attempt(X509Bundle.parse_der, TD, data), X509Bundle, InvalidBundleError)
