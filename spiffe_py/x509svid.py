"""X509-SVIDs: parsing with the full profile check, and chain verification against a bundle source.

    svid = X509Svid.parse(chain_pem_or_der, pkcs8_key)       # X509-SVID.md §2-§4 + key match
    peer_id = verify_x509_svid(peer_chain, bundles, now=clock.now(), crls=crls)   # §5
    write_private(path, svid.key_pem())

Structure problems raise :class:`InvalidX509SvidError`; chain, signature and time problems raise
:class:`VerificationError` (:class:`RevokedError` for a certificate listed in a CRL from its issuer).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from cryptography import x509
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from spiffe_py import _pem
from spiffe_py.bundle import X509BundleSource
from spiffe_py.errors import InvalidSpiffeIdError, InvalidX509SvidError, RevokedError, VerificationError
from spiffe_py.spiffeid import SpiffeId

MAX_CHAIN_LENGTH = 16
_MAX_HINT = 1024

_ExtT = TypeVar("_ExtT", bound=x509.ExtensionType)


def _invalid(message: str) -> InvalidX509SvidError:
    return InvalidX509SvidError(f"x509svid: {message}")


def _extension(cert: x509.Certificate, kind: type[_ExtT]) -> x509.Extension[_ExtT] | None:
    """The extension of type ``kind`` or None."""
    try:
        return cert.extensions.get_extension_for_class(kind)
    except x509.ExtensionNotFound:
        return None


def _uri_sans(cert: x509.Certificate) -> tuple[list[str], bool]:
    """All URI SANs and whether the SAN extension is critical."""
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is None:
        return [], False
    return san.value.get_values_for_type(x509.UniformResourceIdentifier), san.critical


def _check_key_usage(cert: x509.Certificate, role: str) -> x509.KeyUsage:
    # X509-SVID §4.3 (X5-09): KeyUsage present on every SVID and critical.
    key_usage = _extension(cert, x509.KeyUsage)
    if key_usage is None:
        raise _invalid(f"{role} certificate must have the key usage extension")
    if not key_usage.critical:
        raise _invalid(f"{role} certificate key usage extension must be critical")
    return key_usage.value


def _check_basic_constraints(cert: x509.Certificate, role: str, *, ca: bool) -> None:
    # X509-SVID §4.1 (X5-08); the extension is required on leaves too (py-spiffe interop).
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None:
        raise _invalid(f"{role} certificate must have the basic constraints extension")
    if constraints.value.ca != ca:
        raise _invalid(f"{role} certificate must {'' if ca else 'not '}be a ca")


def validate_leaf_san(uris: Sequence[str], *, critical: bool, empty_subject: bool) -> SpiffeId:
    """The SAN part of the leaf profile, from the URI SANs and the SAN's criticality: the leaf's SPIFFE ID."""
    if len(uris) != 1:  # X5-01, X5-02, X5-18
        raise _invalid(f"leaf certificate must have exactly one uri san, found {len(uris)}")
    try:
        spiffe_id = SpiffeId.parse(uris[0])
    except InvalidSpiffeIdError as err:
        raise _invalid(f"leaf certificate uri san is not a valid spiffe id: {err.reason}") from err
    if spiffe_id.is_root:  # X5-03, X5-18
        raise _invalid(f"leaf certificate spiffe id must have a non-root path: {str(spiffe_id)!r}")
    if empty_subject and not critical:  # X5-04, RFC 5280 §4.1.2.6
        raise _invalid("leaf certificate with an empty subject must have a critical san extension")
    return spiffe_id


def validate_leaf_profile(cert: x509.Certificate) -> SpiffeId:
    """Check the X509-SVID leaf profile (no crypto) and return the leaf's SPIFFE ID."""
    uris, san_critical = _uri_sans(cert)
    spiffe_id = validate_leaf_san(uris, critical=san_critical, empty_subject=len(cert.subject) == 0)
    _check_basic_constraints(cert, "leaf", ca=False)  # X5-08, X5-17
    key_usage = _check_key_usage(cert, "leaf")
    if not key_usage.digital_signature:  # X5-11
        raise _invalid("leaf certificate must have digitalSignature key usage")
    if key_usage.key_cert_sign:  # X5-11, X5-17
        raise _invalid("leaf certificate must not have keyCertSign key usage")
    if key_usage.crl_sign:
        raise _invalid("leaf certificate must not have cRLSign key usage")
    eku = _extension(cert, x509.ExtendedKeyUsage)
    wanted = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    if eku is not None and not wanted <= set(eku.value):  # X5-13
        raise _invalid("leaf certificate extended key usage must include serverAuth and clientAuth")
    return spiffe_id


def validate_signing_profile(cert: x509.Certificate) -> None:
    """Check the X509-SVID signing (CA) certificate profile (no crypto)."""
    _check_basic_constraints(cert, "signing", ca=True)  # X5-08
    if not _check_key_usage(cert, "signing").key_cert_sign:  # X5-09, X5-10
        raise _invalid("signing certificate must have keyCertSign key usage")
    uris, _ = _uri_sans(cert)
    for uri in uris:  # X5-06: a signing certificate's SPIFFE ID has no path
        try:
            spiffe_id = SpiffeId.parse(uri)
        except InvalidSpiffeIdError as err:
            raise _invalid(f"signing certificate uri san is not a valid spiffe id: {err.reason}") from err
        if not spiffe_id.is_root:
            raise _invalid(f"signing certificate spiffe id must not have a path: {str(spiffe_id)!r}")


def _validate_chain(chain: Sequence[x509.Certificate]) -> SpiffeId:
    if not chain:
        raise _invalid("certificate chain is empty")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise _invalid(f"certificate chain has more than {MAX_CHAIN_LENGTH} certificates")
    for index, cert in enumerate(chain):
        try:
            _pem.checked_certificate(cert)
        except _pem.DecodeError as err:
            raise _invalid(f"certificate {index} in the chain is malformed") from err
    spiffe_id = validate_leaf_profile(chain[0])
    for cert in chain[1:]:
        validate_signing_profile(cert)
    return spiffe_id


@dataclass(frozen=True, slots=True)
class X509Svid:
    """An X509-SVID: SPIFFE ID, chain (leaf first) and the leaf's private key (validated on construction)."""

    spiffe_id: SpiffeId
    cert_chain: tuple[x509.Certificate, ...]
    private_key: _pem.SigningKey = field(repr=False, compare=False)  # determined by the leaf anyway
    hint: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cert_chain", tuple(self.cert_chain))
        if _validate_chain(self.cert_chain) != self.spiffe_id:
            raise _invalid(f"spiffe id {str(self.spiffe_id)!r} does not match the leaf certificate")
        if self.cert_chain[0].public_key() != self.private_key.public_key():
            raise _invalid("private key does not match the leaf certificate")
        if len(self.hint) > _MAX_HINT:
            raise _invalid(f"hint is longer than {_MAX_HINT} characters")

    @classmethod
    def parse(cls, cert_chain: bytes, private_key: bytes | None = None, hint: str = "") -> X509Svid:
        """Parse a chain (PEM, or concatenated DER, leaf first) and a PKCS#8 key (PEM or DER).

        Like go-spiffe, one PEM blob may hold both: pass it alone (or as both arguments) and its
        CERTIFICATE blocks are the chain, its single PRIVATE KEY block the key.
        """
        if private_key is None or private_key == cert_chain:
            try:
                certs, key = _pem.chain_and_key_from_pem(cert_chain)
            except _pem.DecodeError as err:
                raise _invalid(f"cannot parse pem with certificate chain and key: {err}") from err
            return cls(_validate_chain(certs), tuple(certs), key, hint)
        try:
            certs = _pem.certificates_from_any(cert_chain)
        except _pem.DecodeError as err:
            raise _invalid(f"cannot parse certificate chain: {err}") from err
        try:
            key = _pem.private_key_from_any(private_key)
        except _pem.DecodeError as err:
            raise _invalid(f"cannot parse private key: {err}") from err
        return cls(_validate_chain(certs), tuple(certs), key, hint)

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate."""
        return self.cert_chain[0]

    @property
    def expires_at(self) -> datetime:
        """The leaf's notAfter (tz-aware UTC)."""
        return self.leaf.not_valid_after_utc

    def chain_pem(self) -> bytes:
        """The chain as concatenated PEM."""
        return _pem.certificates_to_pem(self.cert_chain)

    def chain_der(self) -> bytes:
        """The chain as concatenated DER (Workload API ``x509_svid``)."""
        return _pem.certificates_to_der(self.cert_chain)

    def key_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return _pem.private_key_to_pem(self.private_key)

    def key_der(self) -> bytes:
        """The private key as unencrypted PKCS#8 DER (Workload API ``x509_svid_key``)."""
        return _pem.private_key_to_der(self.private_key)


class X509SvidSource(Protocol):
    """Anything that can hand out the current X509-SVID."""

    def get_x509_svid(self) -> X509Svid:
        """The current X509-SVID."""
        ...


def verify_x509_svid(
    chain: Sequence[x509.Certificate],
    bundles: X509BundleSource,
    *,
    now: datetime,
    crls: Sequence[x509.CertificateRevocationList] = (),
) -> SpiffeId:
    """Verify a peer chain (leaf first) against the bundle of the leaf's trust domain; return its ID.

    Raises InvalidX509SvidError (profile), BundleNotFoundError (no bundle for the trust domain),
    VerificationError (chain, signature, time) and RevokedError (listed in a CRL of its issuer).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    spiffe_id = _validate_chain(chain)
    # X5-16 / WA-09: only the leaf's own trust domain's authorities are anchors.
    authorities = bundles.get_x509_bundle_for_trust_domain(spiffe_id.trust_domain).authorities
    if not authorities:  # TDB-08
        raise VerificationError(f"x509svid: no x509 authorities for trust domain {spiffe_id.trust_domain.name!r}")
    verified = _verify_path(chain, authorities, now)
    _check_revocation(verified, crls)
    return spiffe_id


def _verify_path(
    chain: Sequence[x509.Certificate], authorities: Sequence[x509.Certificate], now: datetime
) -> list[x509.Certificate]:
    # The leaf profile (incl. EKU serverAuth+clientAuth) is checked by validate_leaf_profile, so the
    # end-entity extension policy permits all; CA certificates get the RFC 5280/WebPKI CA checks.
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(list(authorities)))
        .time(now)
        .max_chain_depth(MAX_CHAIN_LENGTH)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        return verifier.verify(chain[0], list(chain[1:])).chain
    except verification.VerificationError as err:
        raise VerificationError(f"x509svid: could not verify leaf certificate: {err}") from err


def _check_revocation(verified: Sequence[x509.Certificate], crls: Sequence[x509.CertificateRevocationList]) -> None:
    """Raise RevokedError if a CRL signed by a certificate's issuer (in the verified chain) lists it."""
    for cert, issuer in itertools.pairwise(verified):
        for crl in crls:
            # A CRL counts only if its issuer is this certificate's issuer and its signature verifies.
            if crl.issuer != issuer.subject or not _crl_signed_by(crl, issuer):
                continue
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise RevokedError(f"x509svid: certificate with serial {cert.serial_number:#x} is revoked")


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
