"""Signer: CA and SVID signing re-validated on output, CSR parsing, JWT signing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpclib.const import Status

from spiffe_py.bundle import JwtBundle
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.errors import status_for
from spiffe_server.ca.keys import KeyType, UpstreamAuthority, generate_key
from spiffe_server.ca.signer import MAX_CSR_BYTES, parse_csr, public_key_from_csr, sign_ca, sign_jwt, sign_x509_svid
from spiffe_server.ca.templates import JwtSvidParams, SvidPolicy, X509SvidParams, build_jwt_claims
from spiffe_server.errors import InvalidCsrError
from tests.support.ca import CA

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")
POLICY = SvidPolicy()
CheckSvid = Callable[..., SpiffeId]  # the check_svid fixture (conftest.py)


@pytest.mark.parametrize("key_type", list(KeyType))
def test_self_signed_ca_signs_valid_svids(key_type: KeyType, check_svid: CheckSvid) -> None:
    ca = sign_ca(trust_domain=TD, key=generate_key(key_type), ttl=timedelta(hours=24), now=NOW)
    assert ca.intermediates == () and ca.cert.issuer == ca.cert.subject
    expected_hash = hashes.SHA384 if key_type is KeyType.EC_P384 else hashes.SHA256
    assert isinstance(ca.cert.signature_hash_algorithm, expected_hash)
    workload_key = generate_key(KeyType.EC_P256)
    chain = sign_x509_svid(ca, X509SvidParams(spiffe_id=WEB, public_key=workload_key.public_key(),
                                              dns_names=("web.example",)), policy=POLICY, now=NOW)
    assert chain[1:] == (ca.cert,)
    assert check_svid(chain, workload_key, [ca.cert], NOW) == WEB
    assert ca.authority_id == ca.cert.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest.hex()


def test_upstream_signed_ca_chains_to_upstream_root(check_svid: CheckSvid) -> None:
    root = CA.create("example.org", now=NOW, ttl=timedelta(days=30))
    mid = root.child_ca(ttl=timedelta(days=10))
    upstream = UpstreamAuthority(cert=mid.cert, intermediates=(), key=mid.key, roots=(root.cert,))
    ca = sign_ca(trust_domain=TD, key=generate_key(KeyType.EC_P256), ttl=timedelta(hours=24), now=NOW,
                 upstream=upstream)
    assert ca.cert.issuer == mid.cert.subject and ca.intermediates == (mid.cert,)
    key = generate_key(KeyType.EC_P256)
    chain = sign_x509_svid(ca, X509SvidParams(spiffe_id=WEB, public_key=key.public_key()), policy=POLICY, now=NOW)
    assert chain[1:] == (ca.cert, mid.cert)
    check_svid(chain, key, [root.cert], NOW)


def test_upstream_without_ski_still_gets_matching_aki() -> None:
    root = CA.create("example.org", now=NOW, ski=False)
    upstream = UpstreamAuthority(cert=root.cert, intermediates=(), key=root.key, roots=(root.cert,))
    ca = sign_ca(trust_domain=TD, key=generate_key(KeyType.EC_P256), ttl=timedelta(hours=2), now=NOW,
                 upstream=upstream)
    aki = ca.cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == x509.SubjectKeyIdentifier.from_public_key(root.key.public_key()).digest
    ca.cert.verify_directly_issued_by(root.cert)


def test_upstream_root_is_not_repeated_in_chain() -> None:
    root = CA.create("example.org", now=NOW)
    upstream = UpstreamAuthority(cert=root.cert, intermediates=(), key=root.key, roots=(root.cert,))
    ca = sign_ca(trust_domain=TD, key=generate_key(KeyType.EC_P256), ttl=timedelta(hours=2), now=NOW,
                 upstream=upstream)
    assert ca.chain == (ca.cert,)


def make_csr(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, *uris: str) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if uris:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_csr_with_matching_or_no_uri_gives_public_key() -> None:
    key = generate_key(KeyType.EC_P256)
    assert public_key_from_csr(make_csr(key, str(WEB)), spiffe_id=WEB) == key.public_key()
    assert public_key_from_csr(make_csr(key), spiffe_id=WEB) == key.public_key()
    assert parse_csr(make_csr(key, str(WEB))).spiffe_id == WEB


def test_csr_with_other_spiffe_id_is_refused() -> None:
    csr = make_csr(generate_key(KeyType.EC_P256), "spiffe://example.org/db")
    with pytest.raises(InvalidCsrError) as info:
        public_key_from_csr(csr, spiffe_id=WEB)
    assert str(info.value) == "ca: csr spiffe id 'spiffe://example.org/db' does not match 'spiffe://example.org/web'"
    assert status_for(info.value) is Status.INVALID_ARGUMENT


@pytest.mark.parametrize(("csr", "message"), [
    (lambda: make_csr(generate_key(KeyType.EC_P256), "spiffe://example.org/a", "spiffe://example.org/b"),
     "csr must hold at most one uri san"),
    (lambda: make_csr(generate_key(KeyType.EC_P256), "https://example.org/a"),
     "csr uri san is not a valid spiffe id: scheme is missing or invalid"),
    (lambda: b"\x30\x03\x02\x01\x00", "malformed csr"),
    (lambda: b"\x00" * (MAX_CSR_BYTES + 1), f"csr is larger than {MAX_CSR_BYTES} bytes"),
    (lambda: make_csr(rsa.generate_private_key(public_exponent=65537, key_size=1024)),
     "csr public key must be ec p-256/p-384 or rsa >= 2048 bits"),
    (lambda: make_csr(ec.generate_private_key(ec.SECP521R1())), "csr public key must be ec p-256/p-384"),
])
def test_bad_csrs_are_refused(csr: object, message: str) -> None:
    assert callable(csr)
    with pytest.raises(InvalidCsrError, match=message.replace(".", r"\.")):
        parse_csr(csr())


def test_csr_with_bad_signature_is_refused() -> None:
    der = bytearray(make_csr(generate_key(KeyType.RSA_2048)))
    der[-1] ^= 0x01  # flip a bit of the RSA signature
    with pytest.raises(InvalidCsrError, match="csr signature is invalid"):
        parse_csr(bytes(der))


def test_sign_jwt_validates_with_bundle() -> None:
    key = generate_key(KeyType.EC_P256)
    claims = build_jwt_claims(JwtSvidParams(spiffe_id=WEB, audience=("db",)), policy=POLICY,
                              key_expires_at=NOW + timedelta(hours=1), now=NOW)
    token = sign_jwt(claims, key=key, kid="kid-1")
    svid = JwtSvid.parse_and_validate(token, JwtBundle(TD, {"kid-1": key.public_key()}), "db", now=NOW)
    assert svid.spiffe_id == WEB and svid.audience == ("db",)
