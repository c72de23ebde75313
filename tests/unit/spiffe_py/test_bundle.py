"""Bundles: SPIFFE bundle JWKS format, PEM/DER forms, bundle maps, BundleSet (TDB-*, X5-19..21, JWT-14/15)."""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from spiffe_py.bundle import BundleSet, JwtBundle, SpiffeBundle, X509Bundle, parse_bundle_map
from spiffe_py.errors import BundleNotFoundError, InvalidBundleError, SpiffeError
from spiffe_py.spiffeid import TrustDomain
from tests.support.ca import CA, generate_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
CA1 = CA.create(TD, now=NOW)
CA2 = CA.create(TD, now=NOW)
RSA_KEY = generate_key("rsa-2048")
P384_KEY = generate_key("ec-p384")
P521_KEY = generate_key("ec-p521")


def _x5c(ca: CA) -> str:
    return base64.b64encode(ca.cert.public_bytes(serialization.Encoding.DER)).decode()


def _doc(*keys: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"keys": list(keys), **extra}).encode()


def _x509_jwk(ca: CA = CA1) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(SpiffeBundle(TD, (ca.cert,)).to_json())["keys"][0]
    return doc


def _jwt_jwk(kid: str = "k1", key: Any = None) -> dict[str, Any]:
    public = (key or CA1.jwt_signing_key()).public_key()
    doc: dict[str, Any] = json.loads(JwtBundle(TD, {kid: public}).to_jwks())["keys"][0]
    return doc


def test_round_trip_full_bundle() -> None:
    """TDB-04/05: sequence and refresh hint survive a round trip, as do all authorities."""
    bundle = SpiffeBundle(
        TD,
        (CA1.cert, CA2.cert),
        {"ec": CA1.jwt_signing_key().public_key(), "rsa": RSA_KEY.public_key(), "p384": P384_KEY.public_key(),
         "p521": P521_KEY.public_key()},
        sequence_number=2**64 - 1,
        refresh_hint=timedelta(days=28),
    )  # fmt: skip
    doc = json.loads(bundle.to_json())
    assert doc["spiffe_sequence"] == 2**64 - 1
    assert doc["spiffe_refresh_hint"] == 2419200
    assert SpiffeBundle.parse(TD, bundle.to_json()) == bundle


def test_x509_jwk_shape() -> None:
    """X5-19/X5-20: use=x509-svid, no kid, x5c holds exactly one standard-base64 DER cert."""
    jwk = _x509_jwk()
    assert jwk["use"] == "x509-svid"
    assert "kid" not in jwk
    assert jwk["x5c"] == [_x5c(CA1)]


def test_jwt_jwk_shape() -> None:
    """JWT-14: use=jwt-svid with a kid."""
    jwk = _jwt_jwk("abc")
    assert (jwk["use"], jwk["kid"], jwk["kty"], jwk["crv"]) == ("jwt-svid", "abc", "EC", "P-256")


CONSUMER_CASES = [
    ("TDB-03-unknown-top-level-ignored", _doc(_x509_jwk(), foo={"bar": 1}), 1, 0),
    ("TDB-06-empty-keys", _doc(), 0, 0),
    ("TDB-07-unknown-use-ignored", _doc({**_x509_jwk(), "use": "sig"}), 0, 0),
    ("TDB-11-missing-use-ignored", _doc({k: v for k, v in _jwt_jwk().items() if k != "use"}), 0, 0),
    ("TDB-11-use-case-sensitive", _doc({**_jwt_jwk(), "use": "JWT-SVID"}), 0, 0),
    ("TDB-11-wit-svid-ignored", _doc({**_jwt_jwk(), "use": "wit-svid"}), 0, 0),
    ("TDB-10-unknown-kty-ignored", _doc({"kty": "OKP", "crv": "Ed25519", "use": "jwt-svid", "kid": "e"}), 0, 0),
    ("TDB-10-missing-kty-ignored", _doc({"use": "jwt-svid", "kid": "e"}), 0, 0),
    ("TDB-10-unknown-curve-ignored", _doc({**_jwt_jwk(), "crv": "secp256k1"}), 0, 0),
    ("X5-21-missing-x5c-ignored", _doc({k: v for k, v in _x509_jwk().items() if k != "x5c"}), 0, 0),
    ("X5-21-empty-x5c-ignored", _doc({**_x509_jwk(), "x5c": []}), 0, 0),
    ("X5-21-empty-x5c-entry-ignored", _doc({**_x509_jwk(), "x5c": [""]}), 0, 0),
    ("X5-21-first-x5c-used", _doc({**_x509_jwk(), "x5c": [_x5c(CA1), _x5c(CA2)]}), 1, 0),
    ("X5-21-union-of-entries", _doc(_x509_jwk(CA1), _x509_jwk(CA2), _jwt_jwk()), 2, 1),
    ("JWT-15-only-jwt-svid-keys", _doc(_jwt_jwk("a"), _jwt_jwk("b", RSA_KEY), _x509_jwk()), 1, 2),
]


@pytest.mark.parametrize(
    ("data", "n_x509", "n_jwt"),
    [c[1:] for c in CONSUMER_CASES],
    ids=[c[0] for c in CONSUMER_CASES],
)
def test_consumer_rules(data: bytes, n_x509: int, n_jwt: int) -> None:
    bundle = SpiffeBundle.parse(TD, data)
    assert (len(bundle.x509_authorities), len(bundle.jwt_authorities)) == (n_x509, n_jwt)


def test_first_x5c_is_the_authority() -> None:
    """X5-21: only the first x5c value counts."""
    bundle = SpiffeBundle.parse(TD, _doc({**_x509_jwk(), "x5c": [_x5c(CA1), _x5c(CA2)]}))
    assert bundle.x509_authorities == (CA1.cert,)


INVALID_BUNDLES = [
    ("TDB-06-keys-missing", b'{"spiffe_sequence": 1}', "'keys' must be present"),
    ("TDB-06-keys-not-list", b'{"keys": {}}', "'keys' must be present"),
    ("TDB-02-not-json", b"{", "invalid json"),
    ("TDB-02-not-object", b"[]", "not an object"),
    ("TDB-02-not-utf8", b'{"keys": [], "x": "\xff"}', "not utf-8"),
    ("TDB-02-duplicate-key", b'{"keys": [], "keys": []}', "duplicate json key 'keys'"),
    ("TDB-02-nan", b'{"keys": [], "spiffe_sequence": NaN}', "constant NaN"),
    ("TDB-02-too-deep", b'{"keys": [], "x": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper"),
    ("TDB-02-too-big", b'{"keys": [], "x": "' + b"a" * (1024 * 1024) + b'"}', "larger than"),
    ("TDB-04-sequence-negative", _doc(spiffe_sequence=-1), "'spiffe_sequence' must be an integer"),
    ("TDB-04-sequence-over-uint64", _doc(spiffe_sequence=2**64), "'spiffe_sequence' must be an integer"),
    ("TDB-04-sequence-string", _doc(spiffe_sequence="1"), "'spiffe_sequence' must be an integer"),
    ("TDB-04-sequence-bool", _doc(spiffe_sequence=True), "'spiffe_sequence' must be an integer"),
    ("TDB-05-refresh-hint-float", _doc(spiffe_refresh_hint=1.5), "'spiffe_refresh_hint' must be an integer"),
    ("TDB-05-refresh-hint-negative", _doc(spiffe_refresh_hint=-5), "'spiffe_refresh_hint' must be an integer"),
    ("TDB-02-key-not-object", _doc("x"), "must be an object"),  # type: ignore[arg-type]
    ("JWT-14-jwt-key-without-kid", _doc({k: v for k, v in _jwt_jwk().items() if k != "kid"}), "missing 'kid'"),
    ("JWT-14-duplicate-kid", _doc(_jwt_jwk("a"), _jwt_jwk("a", RSA_KEY)), "duplicate jwt-svid key id 'a'"),
    ("JWT-14-ec-point-off-curve", _doc({**_jwt_jwk(), "y": _jwt_jwk()["x"]}), "not on the curve"),
    ("JWT-14-ec-short-coordinate", _doc({**_jwt_jwk(), "x": "AAAA"}), "wrong length"),
    ("JWT-14-bad-base64url", _doc({**_jwt_jwk(), "x": "a+b/"}), "invalid base64url"),
    ("JWT-14-padded-base64url", _doc({**_jwt_jwk(), "x": _jwt_jwk()["x"] + "="}), "invalid base64url"),
    ("JWT-14-rsa-too-small", _doc({"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "jwt-svid", "kid": "r"}), "modul"),
    ("X5-20-x5c-bad-base64", _doc({**_x509_jwk(), "x5c": ["%%%"]}), "base64 der certificate"),
    ("X5-20-x5c-not-a-cert", _doc({**_x509_jwk(), "x5c": ["AAAA"]}), "base64 der certificate"),
    ("X5-20-x5c-not-list", _doc({**_x509_jwk(), "x5c": "abc"}), "'x5c' must be a list"),
    ("X5-20-x5c-key-mismatch", _doc({**_x509_jwk(CA1), "x5c": [_x5c(CA2)]}), "does not match its x5c"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in INVALID_BUNDLES], ids=[c[0] for c in INVALID_BUNDLES])
def test_parse_rejects(data: bytes, message: str) -> None:
    with pytest.raises(InvalidBundleError, match=r"^bundle: ") as info:
        SpiffeBundle.parse(TD, data)
    assert message in str(info.value)


def test_x509_bundle_pem_and_der_round_trip() -> None:
    bundle = X509Bundle(TD, (CA1.cert, CA2.cert))
    assert X509Bundle.parse_pem(TD, bundle.to_pem()) == bundle
    assert X509Bundle.parse_der(TD, bundle.to_der()) == bundle
    assert X509Bundle.parse_der(TD, b"") == X509Bundle(TD)


@pytest.mark.parametrize(
    ("parse", "data", "message"),
    [
        ("pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a certificate"),
        ("pem", b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n", "invalid base64"),
        ("pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n", "malformed pem block"),
        ("pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "invalid certificate"),
        ("der", b"\x30\x82\x05", "invalid length"),
        ("der", b"\x30\x05\x01", "truncated"),
        ("der", b"\x04\x00", "not a sequence"),
    ],
)
def test_x509_bundle_rejects(parse: str, data: bytes, message: str) -> None:
    method = X509Bundle.parse_pem if parse == "pem" else X509Bundle.parse_der
    with pytest.raises(InvalidBundleError, match=message):
        method(TD, data)


def test_pem_scan_is_linear_on_unterminated_blocks() -> None:
    """Hostile input: many BEGIN lines and no END (a backtracking regex would take minutes here)."""
    with pytest.raises(InvalidBundleError, match="malformed pem block"):
        X509Bundle.parse_pem(TD, b"-----BEGIN CERTIFICATE-----\n" * 140_000)
    with pytest.raises(InvalidBundleError, match="larger than"):
        X509Bundle.parse_pem(TD, b"-----BEGIN CERTIFICATE-----\n" * 150_000)


def test_x509_bundle_der_rejects_trailing_garbage() -> None:
    with pytest.raises(InvalidBundleError):
        X509Bundle.parse_der(TD, CA1.x509_bundle().to_der() + b"\x30")


def test_x509_bundle_is_immutable_with_helpers() -> None:
    bundle = X509Bundle(TD, (CA1.cert,))
    grown = bundle.with_authority(CA2.cert).with_authority(CA2.cert)
    assert bundle.authorities == (CA1.cert,)
    assert grown.authorities == (CA1.cert, CA2.cert)
    assert grown.without_authority(CA1.cert).authorities == (CA2.cert,)


def test_jwt_bundle_jwks_round_trip_and_find() -> None:
    bundle = JwtBundle(TD, {"a": CA1.jwt_signing_key().public_key(), "b": RSA_KEY.public_key()})
    assert JwtBundle.parse_jwks(TD, bundle.to_jwks()) == bundle
    assert bundle.find("b") == RSA_KEY.public_key()
    with pytest.raises(BundleNotFoundError, match="no jwt authority with key id 'zzz'"):
        bundle.find("zzz")
    assert bundle.without_authority("a").authorities.keys() == {"b"}
    assert bundle.with_authority("c", P384_KEY.public_key()).find("c") == P384_KEY.public_key()


def test_jwt_bundle_rejects_unsupported_key_type() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(TypeError):
        JwtBundle(TD, {"k": ed25519.Ed25519PrivateKey.generate().public_key()})


def test_bundle_map_parses_and_rejects_duplicates() -> None:
    """TDB-12/13: trust_domains required; duplicate names rejected (also across spelling)."""
    one = CA1.spiffe_bundle().to_json().decode()
    other = CA.create("other.org", now=NOW).spiffe_bundle().to_json().decode()
    parsed = parse_bundle_map(f'{{"trust_domains": {{"example.org": {one}, "spiffe://other.org": {other}}}}}'.encode())
    assert set(parsed) == {TD, TrustDomain.parse("other.org")}
    assert parsed[TD].x509_authorities == (CA1.cert,)
    assert parse_bundle_map(b'{"trust_domains": {}}') == {}
    for data, message in [
        (f'{{"trust_domains": {{"example.org": {one}, "example.org": {one}}}}}', "duplicate json key"),
        (f'{{"trust_domains": {{"example.org": {one}, "spiffe://example.org": {one}}}}}', "duplicate trust domain"),
        ('{"x": {}}', "'trust_domains' must be present"),
        ('{"trust_domains": {"Example.org": {"keys": []}}}', "invalid trust domain"),
        ('{"trust_domains": {"example.org": []}}', "must be an object"),
    ]:
        with pytest.raises(InvalidBundleError, match=message):
            parse_bundle_map(data.encode())


def test_bundle_set_sources() -> None:
    other_td = TrustDomain.parse("other.org")
    other = CA.create(other_td, now=NOW)
    bundles = BundleSet.of(CA1.spiffe_bundle(), other.x509_bundle())
    assert bundles.get_x509_bundle_for_trust_domain(TD).authorities == (CA1.cert,)
    assert bundles.get_x509_bundle_for_trust_domain(other_td).authorities == (other.cert,)
    assert bundles.get_jwt_bundle_for_trust_domain(TD).trust_domain == TD
    with pytest.raises(BundleNotFoundError) as info:
        bundles.get_jwt_bundle_for_trust_domain(other_td)
    assert info.value.trust_domain == "other.org"
    assert [b.trust_domain for b in bundles.x509_bundles()] == [TD, other_td]
    assert len(bundles.jwt_bundles()) == 1
    with pytest.raises(ValueError, match="given twice"):
        BundleSet.of(CA1.x509_bundle(), CA2.x509_bundle())
    replaced = bundles.with_bundle(CA2.x509_bundle())
    assert replaced.get_x509_bundle_for_trust_domain(TD).authorities == (CA2.cert,)


def test_single_bundles_are_sources_for_their_own_trust_domain_only() -> None:
    other_td = TrustDomain.parse("other.org")
    assert CA1.x509_bundle().get_x509_bundle_for_trust_domain(TD) == CA1.x509_bundle()
    for lookup in (
        lambda: CA1.x509_bundle().get_x509_bundle_for_trust_domain(other_td),
        lambda: CA1.jwt_bundle().get_jwt_bundle_for_trust_domain(other_td),
        lambda: CA1.spiffe_bundle().get_x509_bundle_for_trust_domain(other_td),
    ):
        with pytest.raises(BundleNotFoundError):
            lookup()


@settings(max_examples=200)
@given(st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_parse_raises_only_spiffe_errors(data: bytes) -> None:
    for parse in (SpiffeBundle.parse, JwtBundle.parse_jwks, X509Bundle.parse_pem, X509Bundle.parse_der):
        with contextlib.suppress(SpiffeError):
            parse(TD, data)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200)
@given(
    st.dictionaries(st.sampled_from(["keys", "spiffe_sequence", "spiffe_refresh_hint", "x"]), _json_values, max_size=4),
    st.lists(
        st.dictionaries(st.sampled_from(["kty", "use", "kid", "crv", "x", "y", "n", "e", "x5c"]), _json_values),
        max_size=3,
    ),
)
def test_structured_json_raises_only_spiffe_errors(doc: dict[str, Any], keys: list[dict[str, Any]]) -> None:
    for candidate in (doc, {**doc, "keys": keys}):
        with contextlib.suppress(SpiffeError):
            SpiffeBundle.parse(TD, json.dumps(candidate).encode())
