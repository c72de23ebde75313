"""X509-SVID parsing and verification (X509-SVID.md, rules X5-01..X5-18, X5-22)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from spiffe_py.bundle import BundleSet, X509Bundle
from spiffe_py.errors import (
    BundleNotFoundError,
    InvalidX509SvidError,
    RevokedError,
    SpiffeError,
    VerificationError,
)
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import X509Svid, validate_leaf_profile, validate_signing_profile, verify_x509_svid
from tests.support.ca import CA, Issued, generate_key, key_usage

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
ROOT = CA.create(TD, now=NOW)
MID = ROOT.child_ca()
ID = "spiffe://example.org/workload"
BUNDLES = BundleSet.of(ROOT.x509_bundle())

# (fixture named after its defect with rule ID, issuer, leaf options, expected message)
LEAF_DEFECTS: list[tuple[str, CA, dict[str, Any], str]] = [
    ("X5-01-leaf-no-uri-san", ROOT, {"uris": [], "dns_names": ["a.example"]}, "exactly one uri san, found 0"),
    ("X5-02-leaf-two-uri-sans", ROOT, {"uris": [ID, "spiffe://example.org/other"]}, "exactly one uri san, found 2"),
    ("X5-02-leaf-spiffe-and-https-uri", ROOT, {"uris": [ID, "https://example.org/"]}, "exactly one uri san, found 2"),
    ("X5-18-leaf-wrong-scheme", ROOT, {"uris": ["https://example.org/workload"]}, "not a valid spiffe id"),
    ("X5-18-leaf-uppercase-td", ROOT, {"uris": ["spiffe://Example.org/workload"]}, "not a valid spiffe id"),
    ("X5-03-leaf-root-id", ROOT, {"uris": ["spiffe://example.org"]}, "must have a non-root path"),
    ("X5-04-leaf-empty-subject-san-not-critical", ROOT, {"subject": x509.Name([]), "san_critical": False},
     "empty subject must have a critical san"),
    ("X5-08-leaf-no-basic-constraints", ROOT, {"is_ca": None}, "must have the basic constraints extension"),
    ("X5-08-leaf-is-ca", ROOT, {"is_ca": True}, "leaf certificate must not be a ca"),
    ("X5-09-leaf-no-key-usage", ROOT, {"key_usage": None}, "must have the key usage extension"),
    ("X5-09-leaf-key-usage-not-critical", ROOT, {"key_usage_critical": False}, "key usage extension must be critical"),
    ("X5-11-leaf-no-digital-signature", ROOT, {"key_usage": key_usage(key_encipherment=True)},
     "must have digitalSignature"),
    ("X5-11-leaf-key-cert-sign", ROOT, {"key_usage": key_usage(digital_signature=True, key_cert_sign=True)},
     "must not have keyCertSign"),
    ("X5-11-leaf-crl-sign", ROOT, {"key_usage": key_usage(digital_signature=True, crl_sign=True)},
     "must not have cRLSign"),
    ("X5-13-leaf-eku-server-only", ROOT, {"eku": [ExtendedKeyUsageOID.SERVER_AUTH]},
     "must include serverAuth and clientAuth"),
    ("X5-13-leaf-eku-client-only", ROOT, {"eku": [ExtendedKeyUsageOID.CLIENT_AUTH]},
     "must include serverAuth and clientAuth"),
]  # fmt: skip


def _ids(cases: list[Any]) -> list[str]:
    return [c[0] for c in cases]


@pytest.mark.parametrize(("issuer", "options", "message"), [c[1:] for c in LEAF_DEFECTS], ids=_ids(LEAF_DEFECTS))
def test_parse_rejects_leaf_defect(issuer: CA, options: dict[str, Any], message: str) -> None:
    svid = issuer.issue_svid(ID, **options)
    with pytest.raises(InvalidX509SvidError, match=r"^x509svid: ") as info:
        X509Svid.parse(svid.chain_pem(), svid.key_pem())
    assert message in str(info.value)


@pytest.mark.parametrize(("issuer", "options", "message"), [c[1:] for c in LEAF_DEFECTS], ids=_ids(LEAF_DEFECTS))
def test_verify_rejects_leaf_defect(issuer: CA, options: dict[str, Any], message: str) -> None:
    """X5-17/X5-18: the verifier applies the same profile, before any crypto."""
    svid = issuer.issue_svid(ID, **options)
    with pytest.raises(InvalidX509SvidError) as info:
        verify_x509_svid(svid.chain, BUNDLES, now=NOW)
    assert message in str(info.value)


SIGNING_DEFECTS: list[tuple[str, dict[str, Any], str]] = [
    ("X5-08-intermediate-not-ca", {"is_ca": False}, "signing certificate must be a ca"),
    ("X5-08-intermediate-no-basic-constraints", {"is_ca": None}, "signing certificate must have the basic constraints"),
    ("X5-09-intermediate-no-key-usage", {"key_usage": None}, "signing certificate must have the key usage extension"),
    (
        "X5-09-intermediate-key-usage-not-critical",
        {"key_usage_critical": False},
        "key usage extension must be critical",
    ),
    ("X5-10-intermediate-no-key-cert-sign", {"key_usage": key_usage(crl_sign=True)}, "must have keyCertSign"),
    ("X5-06-intermediate-id-with-path", {"uris": ["spiffe://example.org/ca"]}, "must not have a path"),
    ("X5-06-intermediate-bad-id", {"uris": ["spiffe://example.org/"]}, "not a valid spiffe id"),
]


@pytest.mark.parametrize(("options", "message"), [c[1:] for c in SIGNING_DEFECTS], ids=_ids(SIGNING_DEFECTS))
def test_parse_rejects_intermediate_defect(options: dict[str, Any], message: str) -> None:
    svid = ROOT.child_ca(**options).issue_svid(ID)
    with pytest.raises(InvalidX509SvidError) as info:
        X509Svid.parse(svid.chain_pem(), svid.key_pem())
    assert message in str(info.value)


def test_signing_profile_accepts_ca_without_uri_san() -> None:
    """X5-05 is a SHOULD: an upstream CA without a SPIFFE ID is acceptable."""
    validate_signing_profile(ROOT.child_ca(uris=[]).cert)


def test_parse_accepts_pem_and_der_and_round_trips() -> None:
    """X5-22: chain DER concatenated leaf first, key PKCS#8 DER."""
    issued = MID.issue_svid(ID, dns_names=["web.example"])
    from_pem = X509Svid.parse(issued.chain_pem(), issued.key_pem(), hint="internal")
    from_der = X509Svid.parse(issued.chain_der(), issued.key_der())
    assert from_pem.spiffe_id == from_der.spiffe_id == SpiffeId.parse(ID)
    assert from_pem.cert_chain == from_der.cert_chain == issued.chain
    assert from_pem.hint == "internal"
    assert from_pem.chain_der() == issued.chain_der()
    assert X509Svid.parse(from_pem.chain_pem(), from_pem.key_pem(), hint="internal") == from_pem
    assert X509Svid.parse(from_der.chain_der(), from_der.key_der()) == from_der
    assert from_pem.expires_at == issued.leaf.not_valid_after_utc
    assert from_pem.leaf == issued.leaf


def test_parse_accepts_one_pem_blob_with_chain_and_key() -> None:
    """As go-spiffe's x509svid.Parse: one PEM file holding the chain (leaf first) and the PKCS#8 key.

    X5-22 names the Workload API's split DER form; files on disk often combine both in one PEM.
    """
    issued = MID.issue_svid(ID)
    expected = X509Svid.parse(issued.chain_pem(), issued.key_pem())
    for blob in (issued.chain_pem() + issued.key_pem(), issued.key_pem() + issued.chain_pem()):
        assert X509Svid.parse(blob) == expected
        assert X509Svid.parse(blob, blob).cert_chain == issued.chain  # go-spiffe style: same bytes twice
        assert X509Svid.parse(blob).private_key.public_key() == issued.key.public_key()
    with pytest.raises(InvalidX509SvidError, match="exactly one pem block of type PRIVATE KEY"):
        X509Svid.parse(issued.chain_pem())
    with pytest.raises(InvalidX509SvidError, match="exactly one pem block of type PRIVATE KEY"):
        X509Svid.parse(issued.chain_pem() + issued.key_pem() + issued.key_pem())
    other = MID.issue_svid(ID)
    with pytest.raises(InvalidX509SvidError, match="private key does not match"):
        X509Svid.parse(issued.chain_pem() + other.key_pem())
    ec_key = issued.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())
    with pytest.raises(InvalidX509SvidError, match="unexpected pem block 'EC PRIVATE KEY'"):
        X509Svid.parse(issued.chain_pem() + ec_key)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "ec-p521", "rsa-2048"])
def test_parse_accepts_key_types(key_type: Any) -> None:
    issued = ROOT.issue_svid(ID, key_type=key_type)
    assert X509Svid.parse(issued.chain_der(), issued.key_der()).spiffe_id == SpiffeId.parse(ID)


def test_parse_accepts_empty_subject_with_critical_san() -> None:
    """X5-04 satisfied."""
    issued = ROOT.issue_svid(ID, subject=x509.Name([]))
    assert X509Svid.parse(issued.chain_pem(), issued.key_pem()).spiffe_id == SpiffeId.parse(ID)


def test_parse_accepts_leaf_without_eku() -> None:
    """X5-13: the EKU is a SHOULD; absent is fine."""
    issued = ROOT.issue_svid(ID, eku=None)
    assert X509Svid.parse(issued.chain_pem(), issued.key_pem()).spiffe_id == SpiffeId.parse(ID)


def test_repr_does_not_show_the_key() -> None:
    svid = X509Svid.parse(*_pem_pair(ROOT.issue_svid(ID)))
    assert "private_key" not in repr(svid)
    assert "PRIVATE" not in repr(svid)


def _pem_pair(issued: Issued) -> tuple[bytes, bytes]:
    return issued.chain_pem(), issued.key_pem()


_MID_PEM = MID.cert.public_bytes(serialization.Encoding.PEM)

PARSE_ERRORS: list[tuple[str, Callable[[], tuple[bytes, bytes]], str]] = [
    ("X5-22-key-mismatch", lambda: (ROOT.issue_svid(ID).chain_pem(), ROOT.issue_svid(ID).key_pem()),
     "private key does not match the leaf certificate"),
    ("X5-22-empty-chain", lambda: (b"", ROOT.issue_svid(ID).key_pem()), "certificate chain is empty"),
    ("X5-22-garbage-chain", lambda: (b"\x30\x03\x02\x01\x01", ROOT.issue_svid(ID).key_pem()),
     "cannot parse certificate chain: invalid certificate"),
    ("X5-22-encrypted-key", lambda: (ROOT.issue_svid(ID).chain_pem(), _encrypted_key()),
     "cannot parse private key"),
    ("X5-22-two-keys", lambda: (ROOT.issue_svid(ID).chain_pem(), ROOT.issue_svid(ID).key_pem() * 2),
     "exactly one pem block of type PRIVATE KEY"),
    ("X5-22-unsupported-key", lambda: (ROOT.issue_svid(ID).chain_pem(), _ed25519_key()),
     "unsupported private key type"),
    ("X5-22-cert-as-key", lambda: (ROOT.issue_svid(ID).chain_pem(), ROOT.issue_svid(ID).chain_pem()),
     "exactly one pem block of type PRIVATE KEY"),
    ("X5-22-too-long-chain", lambda: (ROOT.issue_svid(ID).chain_pem() + _MID_PEM * 16, ROOT.issue_svid(ID).key_pem()),
     "more than 16 certificates"),
]  # fmt: skip


def _encrypted_key() -> bytes:
    return generate_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )


def _ed25519_key() -> bytes:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(("make", "message"), [c[1:] for c in PARSE_ERRORS], ids=_ids(PARSE_ERRORS))
def test_parse_rejects(make: Callable[[], tuple[bytes, bytes]], message: str) -> None:
    chain, key = make()
    with pytest.raises(InvalidX509SvidError) as info:
        X509Svid.parse(chain, key)
    assert message in str(info.value)
    assert "BEGIN" not in str(info.value)


def test_constructor_checks_id_matches_leaf() -> None:
    issued = ROOT.issue_svid(ID)
    with pytest.raises(InvalidX509SvidError, match="does not match the leaf"):
        X509Svid(SpiffeId.parse("spiffe://example.org/other"), issued.chain, issued.key)


# ---- verification (X5-16..X5-18) ----


def test_verify_accepts_good_chains() -> None:
    """X5-16: direct leaf and leaf + intermediate both verify against the root."""
    assert verify_x509_svid(ROOT.issue_svid(ID).chain, BUNDLES, now=NOW) == SpiffeId.parse(ID)
    assert verify_x509_svid(MID.issue_svid(ID).chain, BUNDLES, now=NOW) == SpiffeId.parse(ID)
    deep = MID.child_ca().issue_svid(ID)
    assert len(deep.chain) == 3
    assert verify_x509_svid(deep.chain, BUNDLES, now=NOW) == SpiffeId.parse(ID)


def test_verify_accepts_intermediate_with_server_and_client_eku() -> None:
    """X5-14: a CA EKU is fine when it carries both serverAuth and clientAuth."""
    issued = ROOT.child_ca(eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]).issue_svid(ID)
    assert verify_x509_svid(issued.chain, BUNDLES, now=NOW) == SpiffeId.parse(ID)


def test_verify_accepts_chain_that_includes_the_root() -> None:
    """X5-16: peers may send the root too; the anchor still comes from the bundle."""
    issued = MID.issue_svid(ID)
    assert verify_x509_svid([*issued.chain, ROOT.cert], BUNDLES, now=NOW) == SpiffeId.parse(ID)


def test_verify_accepts_leaf_without_aki() -> None:
    """Foreign issuers may omit AKI on leaves; the chain still verifies."""
    assert verify_x509_svid(ROOT.issue_svid(ID, aki=False).chain, BUNDLES, now=NOW) == SpiffeId.parse(ID)


OTHER_ROOT = CA.create(TD, now=NOW)
FOREIGN = CA.create("other.org", now=NOW)

VERIFY_ERRORS: list[tuple[str, Callable[[], tuple[Issued, Any]], type[Exception], str]] = [
    ("X5-16-leaf-expired", lambda: (ROOT.issue_svid(ID, not_after=NOW - timedelta(seconds=1)), BUNDLES),
     VerificationError, "not valid at validation time"),
    ("X5-16-leaf-not-yet-valid", lambda: (ROOT.issue_svid(ID, not_before=NOW + timedelta(seconds=1)), BUNDLES),
     VerificationError, "not valid at validation time"),
    ("X5-16-intermediate-expired",
     lambda: (ROOT.child_ca(not_after=NOW - timedelta(seconds=1)).issue_svid(ID), BUNDLES),
     VerificationError, "not valid at validation time"),
    ("X5-16-leaf-bad-signature", lambda: (ROOT.issue_svid(ID, signer_key=generate_key()), BUNDLES),
     VerificationError, "could not verify"),
    ("X5-16-untrusted-root", lambda: (OTHER_ROOT.issue_svid(ID), BUNDLES), VerificationError, "could not verify"),
    ("X5-16-missing-intermediate", lambda: (Issued(MID.issue_svid(ID).chain[:1], generate_key()), BUNDLES),
     VerificationError, "could not verify"),
    ("X5-16-intermediate-path-length-exceeded",
     lambda: (ROOT.child_ca(path_length=0).child_ca().issue_svid(ID), BUNDLES),
     VerificationError, "could not verify"),
    ("X5-14-intermediate-eku-server-only",
     lambda: (ROOT.child_ca(eku=[ExtendedKeyUsageOID.SERVER_AUTH]).issue_svid(ID), BUNDLES),
     VerificationError, "EKU"),
    ("WA-09-other-trust-domain-root-not-used",
     lambda: (FOREIGN.issue_svid(ID), BundleSet.of(ROOT.x509_bundle(), FOREIGN.x509_bundle())),
     VerificationError, "could not verify"),
    ("WA-09-no-bundle-for-trust-domain",
     lambda: (FOREIGN.issue_svid("spiffe://other.org/w"), BUNDLES), BundleNotFoundError, "other.org"),
    ("TDB-08-empty-bundle", lambda: (ROOT.issue_svid(ID), BundleSet.of(X509Bundle(TD))),
     VerificationError, "no x509 authorities"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "error", "message"), [c[1:] for c in VERIFY_ERRORS], ids=_ids(VERIFY_ERRORS))
def test_verify_rejects(make: Callable[[], tuple[Issued, Any]], error: type[Exception], message: str) -> None:
    issued, bundles = make()
    with pytest.raises(error) as info:
        verify_x509_svid(issued.chain, bundles, now=NOW)
    assert message in str(info.value)


def test_verify_rejects_empty_chain() -> None:
    with pytest.raises(InvalidX509SvidError, match="certificate chain is empty"):
        verify_x509_svid([], BUNDLES, now=NOW)


def test_verify_needs_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_x509_svid(ROOT.issue_svid(ID).chain, BUNDLES, now=datetime(2026, 3, 1))


# ---- CRLs ----


def test_crl_revokes_leaf() -> None:
    issued = MID.issue_svid(ID)
    with pytest.raises(RevokedError, match=f"serial {issued.leaf.serial_number:#x} is revoked"):
        verify_x509_svid(issued.chain, BUNDLES, now=NOW, crls=[MID.crl([issued.leaf])])


def test_crl_revokes_intermediate() -> None:
    issued = MID.issue_svid(ID)
    with pytest.raises(RevokedError):
        verify_x509_svid(issued.chain, BUNDLES, now=NOW, crls=[ROOT.crl([MID.cert])])


def test_crl_for_other_serials_is_harmless() -> None:
    issued = MID.issue_svid(ID)
    crls = [MID.crl([issued.leaf.serial_number + 1]), ROOT.crl([])]
    assert verify_x509_svid(issued.chain, BUNDLES, now=NOW, crls=crls) == SpiffeId.parse(ID)


def test_crl_from_unknown_issuer_is_ignored() -> None:
    issued = MID.issue_svid(ID)
    stranger = CA.create("other.org", now=NOW)
    assert verify_x509_svid(issued.chain, BUNDLES, now=NOW, crls=[stranger.crl([issued.leaf])]) == SpiffeId.parse(ID)


def test_crl_with_forged_signature_is_ignored() -> None:
    """A CRL naming the real issuer but signed by another key does not count."""
    issued = MID.issue_svid(ID)
    forged = MID.crl([issued.leaf], signer_key=generate_key())
    assert verify_x509_svid(issued.chain, BUNDLES, now=NOW, crls=[forged]) == SpiffeId.parse(ID)


def test_crl_from_wrong_level_does_not_revoke() -> None:
    """The root's CRL listing the leaf's serial does not revoke it: the leaf was issued by MID."""
    issued = MID.issue_svid(ID)
    assert verify_x509_svid(issued.chain, BUNDLES, now=NOW, crls=[ROOT.crl([issued.leaf])]) == SpiffeId.parse(ID)


# ---- properties ----


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
def test_parse_rejects_non_positive_serial() -> None:
    """RFC 5280 §4.1.2.2: the serial is a positive integer."""
    issued = ROOT.issue_svid(ID, serial=0x1234_5678_9ABC_DEF0_1234)
    der = bytearray(issued.chain_der())
    der[bytes(der).index(bytes.fromhex("123456789abcdef01234"))] |= 0x80  # same length, sign bit: negative
    with pytest.raises(InvalidX509SvidError, match="serial number must be positive"):
        X509Svid.parse(bytes(der), issued.key_der())


def test_validate_leaf_profile_returns_id() -> None:
    assert validate_leaf_profile(ROOT.issue_svid(ID).leaf) == SpiffeId.parse(ID)


@settings(max_examples=200)
@given(st.binary(max_size=600), st.binary(max_size=200))
def test_parse_raises_only_spiffe_errors(chain: bytes, key: bytes) -> None:
    with contextlib.suppress(SpiffeError):
        X509Svid.parse(chain, key)


_GOOD = ROOT.issue_svid(ID)


@pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")
@settings(max_examples=200)
@given(st.integers(0, len(_GOOD.chain_der()) - 1), st.integers(0, 255))
def test_parse_of_mutated_der_raises_only_spiffe_errors(index: int, value: int) -> None:
    data = bytearray(_GOOD.chain_der())
    data[index] = value
    with contextlib.suppress(SpiffeError):
        X509Svid.parse(bytes(data), _GOOD.key_der())


def test_leaf_name_attribute_subject_is_kept() -> None:
    issued = ROOT.issue_svid(ID, subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web")]))
    assert X509Svid.parse(*_pem_pair(issued)).leaf.subject == issued.leaf.subject
