"""Signing fast path: every leaf encoder profile-checks the signed leaf, the bundle is cached per CA state."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from spiffe_py.clock import ManualClock
from spiffe_py.errors import InvalidX509SvidError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import validate_leaf_profile
from spiffe_server.ca.keys import KeyType, MemoryKeyManager, generate_key
from spiffe_server.ca.manager import AuthorityKind, CaConfig, CaManager, MemoryJournalStore
from spiffe_server.ca.signer import (
    BuilderLeafEncoder,
    LeafEncoder,
    ProfileLeafEncoder,
    public_key_from_csr,
    sign_ca,
    sign_x509_svid,
    sign_x509_svid_der,
)
from spiffe_server.ca.templates import LeafFields, SvidPolicy, X509SvidParams, leaf_fields
from spiffe_server.errors import InvalidCsrError
from tests.unit.server.ca.test_ca_signer import make_csr

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")
CA_AUTHORITY = sign_ca(trust_domain=TD, key=generate_key(KeyType.EC_P256), ttl=timedelta(hours=24), now=NOW)
LEAF_KEY = generate_key(KeyType.EC_P256)


def _fields() -> LeafFields:
    return leaf_fields(X509SvidParams(spiffe_id=WEB, public_key=LEAF_KEY.public_key()), policy=SvidPolicy(),
                       issuer=CA_AUTHORITY.cert, now=NOW)


def test_the_signed_leaf_passes_the_profile_with_either_encoder() -> None:
    """X5-01..13: both encoders' leaves pass the post-sign profile check."""
    params = X509SvidParams(spiffe_id=WEB, public_key=LEAF_KEY.public_key())
    for encoder in (BuilderLeafEncoder(), ProfileLeafEncoder()):
        leaf = sign_x509_svid_der(CA_AUTHORITY, params, policy=SvidPolicy(), now=NOW, encoder=encoder).chain[0]
        assert validate_leaf_profile(leaf) == WEB
    assert validate_leaf_profile(sign_x509_svid(CA_AUTHORITY, params, policy=SvidPolicy(), now=NOW)[0]) == WEB


@pytest.mark.parametrize(("san", "message"), [
    (x509.SubjectAlternativeName([x509.DNSName("web.example")]), "exactly one uri san, found 0"),  # X5-01
    (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org")]),
     "must have a non-root path"),  # X5-03
])
@pytest.mark.parametrize("encoder", [BuilderLeafEncoder, ProfileLeafEncoder])
def test_an_encoder_refuses_a_non_conformant_signed_leaf(
        san: x509.SubjectAlternativeName, message: str, encoder: type[LeafEncoder]) -> None:
    """Defence in depth: a field bug is caught on the signed leaf and nothing is returned (SPIRE credvalidator)."""
    fields = dataclasses.replace(_fields(), san=san)
    with pytest.raises(InvalidX509SvidError, match=message):
        encoder().encode(CA_AUTHORITY, fields, LEAF_KEY.public_key())


@pytest.mark.parametrize(("san", "message"), [
    (x509.SubjectAlternativeName([x509.DNSName("web.example")]), "exactly one uri san, found 0"),  # X5-01
    (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org/a"),
                                  x509.UniformResourceIdentifier("spiffe://example.org/b")]),
     "exactly one uri san, found 2"),  # X5-02
    (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://example.org")]),
     "must have a non-root path"),  # X5-03
    (x509.SubjectAlternativeName([x509.UniformResourceIdentifier("https://example.org/web")]),
     "not a valid spiffe id"),
])
def test_a_memoised_profile_still_checks_every_leafs_san(san: x509.SubjectAlternativeName, message: str) -> None:
    """The SAN is per leaf: a good first leaf does not let a later bad SAN through the shared profile."""
    encoder = ProfileLeafEncoder()
    good = _fields()
    encoder.encode(CA_AUTHORITY, good, LEAF_KEY.public_key())
    with pytest.raises(InvalidX509SvidError, match=message):
        encoder.encode(CA_AUTHORITY, dataclasses.replace(good, san=san), LEAF_KEY.public_key())


def test_one_profile_signs_leaves_for_many_entries() -> None:
    """Leaves of different entries under one CA and subject: each carries its own SPIFFE ID and passes the profile."""
    encoder = ProfileLeafEncoder()
    for name in ("web", "db", "queue"):
        sid = SpiffeId.parse(f"spiffe://example.org/{name}")
        fields = leaf_fields(X509SvidParams(spiffe_id=sid, public_key=LEAF_KEY.public_key()), policy=SvidPolicy(),
                             issuer=CA_AUTHORITY.cert, now=NOW)
        leaf = x509.load_der_x509_certificate(encoder.encode(CA_AUTHORITY, fields, LEAF_KEY.public_key()))
        leaf.verify_directly_issued_by(CA_AUTHORITY.cert)
        assert validate_leaf_profile(leaf) == sid


def test_the_profile_encoder_checks_each_profile_again_after_a_refusal() -> None:
    """A refused profile is not memoised: the same bad fields are refused every time."""
    encoder = ProfileLeafEncoder()
    bad = dataclasses.replace(_fields(), san=x509.SubjectAlternativeName([x509.DNSName("web.example")]))
    for _ in range(2):
        with pytest.raises(InvalidX509SvidError):
            encoder.encode(CA_AUTHORITY, bad, LEAF_KEY.public_key())


def test_csr_uri_check_without_parsing_still_refuses_other_and_invalid_ids() -> None:
    key = generate_key(KeyType.EC_P256)
    assert public_key_from_csr(make_csr(key, str(WEB)), spiffe_id=WEB) == key.public_key()
    with pytest.raises(InvalidCsrError, match=re.escape("'spiffe://example.org/db' does not match 'spiffe://example.org/web'")):
        public_key_from_csr(make_csr(key, "spiffe://example.org/db"), spiffe_id=WEB)
    with pytest.raises(InvalidCsrError, match="csr uri san is not a valid spiffe id"):
        public_key_from_csr(make_csr(key, "spiffe://example.org/web/"), spiffe_id=WEB)


def test_bundle_is_cached_until_the_ca_state_changes() -> None:
    """TDB sequence: a cached bundle never outlives a rotation, taint or new authority."""
    clock = ManualClock(NOW)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock)
    first = ca.bundle()
    assert ca.bundle() is first
    old = ca.active_x509_ca().authority_id
    ca.prepare(AuthorityKind.X509)
    second = ca.bundle()
    assert second is not first and len(second.x509_authorities) == 2
    assert second.sequence_number == (first.sequence_number or 0) + 1
    ca.activate(AuthorityKind.X509)  # the bundle content is unchanged: the cached one may stay
    assert ca.bundle().x509_authorities == second.x509_authorities
    ca.taint(AuthorityKind.X509, old)
    assert ca.bundle() is not second and ca.bundle().sequence_number == (second.sequence_number or 0) + 1
