"""Certificate templates and JWT claims (pure policy): subjects, extensions, TTLs and capping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.ca.signer import BuilderLeafEncoder, X509Authority
from spiffe_server.ca.templates import (
    JwtSvidParams,
    SvidKind,
    SvidPolicy,
    X509SvidParams,
    build_ca_template,
    build_jwt_claims,
    leaf_fields,
    max_safe_svid_ttl,
    svid_ttl_warnings,
)
from tests.support.ca import PrivateKey, generate_key

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")


def sign(builder: x509.CertificateBuilder, key: PrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def root_ca(key: PrivateKey, ttl: timedelta = timedelta(hours=24)) -> x509.Certificate:
    return sign(build_ca_template(trust_domain=TD, public_key=key.public_key(), ttl=ttl, now=NOW), key)


E = TypeVar("E", bound=x509.ExtensionType)


def ext(cert: x509.Certificate, kind: type[E]) -> x509.Extension[E]:
    return cert.extensions.get_extension_for_class(kind)


DEFAULT_POLICY = SvidPolicy()


def leaf(params: X509SvidParams, policy: SvidPolicy = DEFAULT_POLICY, ca_ttl: timedelta = timedelta(hours=24),
         now: datetime = NOW) -> x509.Certificate:
    ca_key = generate_key()
    ca = root_ca(ca_key, ca_ttl)
    der = BuilderLeafEncoder().encode(X509Authority(cert=ca, key=ca_key),
                                      leaf_fields(params, policy=policy, issuer=ca, now=now), params.public_key)
    return x509.load_der_x509_certificate(der)


def test_ca_template_profile_x5_05_06_09_10_12() -> None:
    key = generate_key()
    ca = root_ca(key)
    serial_attr = ca.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    assert ca.subject.rfc4514_string() == f"2.5.4.5={ca.serial_number},O=SPIFFE,C=US"
    assert serial_attr[0].value == str(ca.serial_number) and ca.issuer == ca.subject
    assert ext(ca, x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier) == ["spiffe://example.org"]
    bc = ext(ca, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = ext(ca, x509.KeyUsage)
    assert ku.critical
    assert ku.value == x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    ski = ext(ca, x509.SubjectKeyIdentifier).value
    assert ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert ca.not_valid_before_utc == NOW - timedelta(seconds=10)
    assert ca.not_valid_after_utc == NOW + timedelta(hours=24)
    assert 0 < ca.serial_number < 2**128


def test_intermediate_ca_is_capped_at_issuer_and_chained_by_aki() -> None:
    root_key, key = generate_key(), generate_key()
    root = root_ca(root_key, timedelta(hours=2))
    mid = sign(build_ca_template(trust_domain=TD, public_key=key.public_key(), ttl=timedelta(hours=24), now=NOW,
                                 issuer=root), root_key)
    assert mid.issuer == root.subject
    assert mid.not_valid_after_utc == root.not_valid_after_utc
    assert (ext(mid, x509.AuthorityKeyIdentifier).value.key_identifier
            == ext(root, x509.SubjectKeyIdentifier).value.digest)


def test_leaf_template_profile_x5_01_04_08_09_11_13() -> None:
    key = generate_key()
    cert = leaf(X509SvidParams(spiffe_id=WEB, public_key=key.public_key(), dns_names=("web.example", "alt")))
    assert cert.subject.rfc4514_string() == "CN=web.example,O=SPIRE,C=US"
    san = ext(cert, x509.SubjectAlternativeName)
    assert not san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [str(WEB)]
    assert san.value.get_values_for_type(x509.DNSName) == ["web.example", "alt"]
    bc = ext(cert, x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = ext(cert, x509.KeyUsage)
    assert ku.critical
    assert ku.value == x509.KeyUsage(True, False, True, False, True, False, False, False, False)
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    assert ext(cert, x509.AuthorityKeyIdentifier)
    assert cert.not_valid_before_utc == NOW - timedelta(seconds=10)
    assert cert.not_valid_after_utc == NOW + timedelta(hours=1)


def test_leaf_without_dns_names_has_no_cn() -> None:
    cert = leaf(X509SvidParams(spiffe_id=WEB, public_key=generate_key().public_key()))
    assert cert.subject.rfc4514_string() == "O=SPIRE,C=US"


def test_leaf_cn_left_out_when_dns_name_exceeds_64_chars() -> None:
    long_name = "a" * 60 + ".example"
    cert = leaf(X509SvidParams(spiffe_id=WEB, public_key=generate_key().public_key(), dns_names=(long_name,)))
    assert cert.subject.rfc4514_string() == "O=SPIRE,C=US"
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [long_name]


def test_leaf_with_empty_subject_marks_san_critical_x5_04() -> None:
    policy = SvidPolicy(svid_subject=x509.Name([]))
    cert = leaf(X509SvidParams(spiffe_id=WEB, public_key=generate_key().public_key()), policy)
    assert len(cert.subject) == 0
    assert ext(cert, x509.SubjectAlternativeName).critical


def test_leaf_not_after_is_capped_at_ca_and_entry_expiry() -> None:
    pub = generate_key().public_key()
    capped = leaf(X509SvidParams(spiffe_id=WEB, public_key=pub, ttl=timedelta(hours=5)), ca_ttl=timedelta(hours=2))
    assert capped.not_valid_after_utc == NOW + timedelta(hours=2)
    entry_end = NOW + timedelta(minutes=7)
    assert leaf(X509SvidParams(spiffe_id=WEB, public_key=pub, expires_at=entry_end)).not_valid_after_utc == entry_end


def test_leaf_ttl_defaults_by_kind() -> None:
    pub = generate_key().public_key()
    policy = SvidPolicy(x509_svid_ttl=timedelta(minutes=30), agent_svid_ttl=timedelta(hours=2))
    agent = leaf(X509SvidParams(spiffe_id=WEB, public_key=pub, kind=SvidKind.AGENT), policy)
    server = leaf(X509SvidParams(spiffe_id=WEB, public_key=pub, kind=SvidKind.SERVER), policy)
    assert agent.not_valid_after_utc == NOW + timedelta(hours=2)
    assert server.not_valid_after_utc == NOW + timedelta(minutes=30)
    assert SvidPolicy().default_x509_ttl(SvidKind.AGENT) == timedelta(hours=1)


def test_leaf_refuses_root_id_and_expired_issuer() -> None:
    pub = generate_key().public_key()
    with pytest.raises(ValueError, match="must have a path"):
        leaf(X509SvidParams(spiffe_id=TD.spiffe_id(), public_key=pub))
    with pytest.raises(ValueError, match="lifetime would be empty"):
        leaf(X509SvidParams(spiffe_id=WEB, public_key=pub), now=NOW + timedelta(days=2))


def test_leaf_serials_are_random() -> None:
    pub = generate_key().public_key()
    params = X509SvidParams(spiffe_id=WEB, public_key=pub)
    assert leaf(params).serial_number != leaf(params).serial_number


def test_jwt_claims_defaults() -> None:
    claims = build_jwt_claims(JwtSvidParams(spiffe_id=WEB, audience=("db",), extra_claims={"team": "a"}),
                              policy=SvidPolicy(), key_expires_at=NOW + timedelta(days=1), now=NOW)
    jti = claims.pop("jti")
    assert claims == {"sub": "spiffe://example.org/web", "aud": ["db"], "iat": int(NOW.timestamp()),
                      "exp": int((NOW + timedelta(minutes=5)).timestamp()), "team": "a"}
    assert isinstance(jti, str) and len(jti) >= 16


def test_jwt_claims_iss_unique_jti_and_caps() -> None:
    policy = SvidPolicy(jwt_issuer="https://issuer.example")
    params = JwtSvidParams(spiffe_id=WEB, audience=("a", "b"), ttl=timedelta(hours=1))
    key_end = NOW + timedelta(minutes=10)
    first = build_jwt_claims(params, policy=policy, key_expires_at=key_end, now=NOW)
    second = build_jwt_claims(params, policy=policy, key_expires_at=key_end, now=NOW)
    assert first["iss"] == "https://issuer.example" and first["aud"] == ["a", "b"]
    assert first["exp"] == int(key_end.timestamp())
    assert first["jti"] != second["jti"]
    entry_end = NOW + timedelta(minutes=3)
    capped = build_jwt_claims(JwtSvidParams(spiffe_id=WEB, audience=("a",), expires_at=entry_end),
                              policy=policy, key_expires_at=key_end, now=NOW)
    assert capped["exp"] == int(entry_end.timestamp())


@pytest.mark.parametrize("claim", ["sub", "aud", "exp", "iat", "nbf", "jti", "iss"])
def test_jwt_extra_claims_cannot_override_reserved(claim: str) -> None:
    with pytest.raises(ValueError, match=f"cannot override reserved claims: \\['{claim}'\\]"):
        build_jwt_claims(JwtSvidParams(spiffe_id=WEB, audience=("a",), extra_claims={claim: "x"}),
                         policy=SvidPolicy(), key_expires_at=NOW + timedelta(days=1), now=NOW)


@pytest.mark.parametrize("audience", [(), ("",)])
def test_jwt_audience_required_jwt_08(audience: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="audience must hold at least one"):
        build_jwt_claims(JwtSvidParams(spiffe_id=WEB, audience=audience), policy=SvidPolicy(),
                         key_expires_at=NOW + timedelta(days=1), now=NOW)


def test_jwt_refuses_expired_key() -> None:
    with pytest.raises(ValueError, match="lifetime would be empty"):
        build_jwt_claims(JwtSvidParams(spiffe_id=WEB, audience=("a",)), policy=SvidPolicy(),
                         key_expires_at=NOW, now=NOW)


def test_ttl_warnings_above_ca_ttl_sixth() -> None:
    assert max_safe_svid_ttl(timedelta(hours=24)) == timedelta(hours=4)
    assert max_safe_svid_ttl(timedelta(days=90)) == timedelta(days=7)
    assert svid_ttl_warnings(SvidPolicy(x509_svid_ttl=timedelta(hours=4)), timedelta(hours=24)) == ()
    warnings = svid_ttl_warnings(SvidPolicy(x509_svid_ttl=timedelta(hours=5), agent_svid_ttl=timedelta(hours=6)),
                                 timedelta(hours=24))
    assert len(warnings) == 2
    assert warnings[0].startswith("ca: default_x509_svid_ttl 5:00:00 is longer than ca_ttl/6 (4:00:00)")
    assert warnings[1].startswith("ca: agent_ttl 6:00:00")


def test_policy_refuses_non_positive_ttl() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        SvidPolicy(jwt_svid_ttl=timedelta(0))
