"""The only module that signs with a CA key: fields → profile check → sign.

    ca = sign_ca(trust_domain=td, key=key, ttl=DEFAULT_CA_TTL, now=now)          # self-signed
    chain = sign_x509_svid(ca, X509SvidParams(spiffe_id=sid, public_key=pub), policy=SvidPolicy(), now=now)
    svid = sign_x509_svid_der(ca, params, policy=SvidPolicy(), now=now)         # .chain and the leaf's .der
    pub = public_key_from_csr(csr_der, spiffe_id=sid)                            # InvalidCsrError if bad
    token = sign_jwt(claims, key=jwt_key, kid=kid)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeGuard

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from spiffe_py._memo import Identity, Memo
from spiffe_py.errors import InvalidSpiffeIdError
from spiffe_py.jwtsvid import sign_jwt_svid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import validate_leaf_profile, validate_leaf_san, validate_signing_profile
from spiffe_server.ca.keys import CaPrivateKey, UpstreamAuthority
from spiffe_server.ca.leafder import LeafProfile, signature_hash
from spiffe_server.ca.templates import (
    CA_SUBJECT,
    CertPublicKey,
    LeafFields,
    SvidPolicy,
    X509SvidParams,
    authority_id,
    build_ca_template,
    leaf_fields,
)
from spiffe_server.errors import InvalidCsrError

MAX_CSR_BYTES = 16 * 1024
_MIN_RSA_BITS = 2048
# What cryptography raises for a CSR's extensions it cannot decode (the last two are not ValueErrors).
_EXTENSION_ERRORS = (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


@dataclass(frozen=True, slots=True)
class X509Authority:
    """A signing CA: its certificate, its key and the certificates between it and the bundle roots."""

    cert: x509.Certificate
    key: CaPrivateKey
    intermediates: tuple[x509.Certificate, ...] = ()

    @property
    def authority_id(self) -> str:
        """Hex subject key identifier (SPIRE's authority ID)."""
        return authority_id(self.cert)

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """What follows a leaf it signs: the CA cert, then any intermediates (never a bundle root)."""
        return (self.cert, *self.intermediates)


@dataclass(frozen=True, slots=True)
class ParsedCsr:
    """The parts of a verified CSR we use."""

    public_key: CertPublicKey
    spiffe_id: SpiffeId | None  # the single URI SAN, if the CSR has one
    dns_names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SignedSvid:
    """A signed X.509-SVID: leaf first, then the authority chain; ``der`` is the leaf as signed."""

    chain: tuple[x509.Certificate, ...]
    der: bytes


def _sign(builder: x509.CertificateBuilder, key: CaPrivateKey) -> x509.Certificate:
    return builder.sign(key, signature_hash(key))


def _sign_bytes(key: CaPrivateKey, data: bytes) -> bytes:
    """The CA's signature over ``data`` (ECDSA, or PKCS#1 v1.5 for RSA; hash by key size)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), signature_hash(key))
    return key.sign(data, ec.ECDSA(signature_hash(key)))


def sign_ca(
    *,
    trust_domain: TrustDomain,
    key: CaPrivateKey,
    ttl: timedelta,
    now: datetime,
    upstream: UpstreamAuthority | None = None,
    subject: x509.Name = CA_SUBJECT,
) -> X509Authority:
    """A new server CA for ``key``: self-signed, or an intermediate signed by ``upstream``."""
    template = build_ca_template(trust_domain=trust_domain, public_key=key.public_key(), ttl=ttl, now=now,
                                 issuer=None if upstream is None else upstream.cert, subject=subject)
    if upstream is None:
        cert = _sign(template, key)
        intermediates: tuple[x509.Certificate, ...] = ()
    else:
        cert = _sign(template, upstream.key)
        above = (upstream.cert, *upstream.intermediates)
        intermediates = tuple(c for c in above if c not in upstream.roots)
    validate_signing_profile(cert)
    return X509Authority(cert=cert, key=key, intermediates=intermediates)


def sign_x509_svid(
    authority: X509Authority, params: X509SvidParams, *, policy: SvidPolicy, now: datetime
) -> tuple[x509.Certificate, ...]:
    """Sign one X.509-SVID; returns leaf first, then the authority chain."""
    return sign_x509_svid_der(authority, params, policy=policy, now=now).chain


def sign_x509_svid_der(authority: X509Authority, params: X509SvidParams, *, policy: SvidPolicy,
                       now: datetime, encoder: LeafEncoder | None = None) -> SignedSvid:
    """Sign one X.509-SVID and keep the leaf's DER as signed (the wire form, sent without a re-encode)."""
    fields = leaf_fields(params, policy=policy, issuer=authority.cert, now=now)
    der = (encoder or LEAF_ENCODER).encode(authority, fields, params.public_key)
    return SignedSvid(chain=(x509.load_der_x509_certificate(der), *authority.chain), der=der)


class LeafEncoder(Protocol):
    """Turns a leaf's fields and public key into the signed leaf's DER; the profile check is its job."""

    def encode(self, authority: X509Authority, fields: LeafFields, public_key: CertPublicKey) -> bytes: ...


class BuilderLeafEncoder:
    """The reference encoder: cryptography's ``CertificateBuilder``, every signed leaf profile-checked."""

    def encode(self, authority: X509Authority, fields: LeafFields, public_key: CertPublicKey) -> bytes:
        """Build, sign and check one leaf."""
        builder = (x509.CertificateBuilder().serial_number(fields.serial).subject_name(fields.subject)
                   .issuer_name(fields.issuer).public_key(public_key)
                   .not_valid_before(fields.not_before).not_valid_after(fields.not_after))
        for ext in fields.extensions(public_key):
            builder = builder.add_extension(ext.value, critical=ext.critical)
        leaf = _sign(builder, authority.key)
        validate_leaf_profile(leaf)
        return leaf.public_bytes(serialization.Encoding.DER)


class ProfileLeafEncoder:
    """The fast path the signing benchmark needs: per (authority, subject), the DER shared by the
    leaves (server.ca.leafder) is built once, and the first leaf signed with it is profile-checked.

    Serial, validity, key and SKI are not part of the X509-SVID profile, so checking one signed
    leaf of a profile covers them. The SAN is, and differs per entry: every leaf's SAN gets the
    profile's SAN check (X5-01..04) before it is signed. tests/unit/server/ca/test_leafder.py
    proves the TBS byte-identical to :class:`BuilderLeafEncoder`'s.
    """

    def __init__(self, max_profiles: int = 4096) -> None:
        self._profiles: Memo[Identity, LeafProfile] = Memo(max_profiles)

    def encode(self, authority: X509Authority, fields: LeafFields, public_key: CertPublicKey) -> bytes:
        """Sign one leaf from its cached profile (built and checked on first use)."""
        # By identity: the authority lives until rotation and leaf subjects are shared (_leaf_names).
        key = Identity(authority, fields.subject)
        profile = self._profiles.get(key)
        if profile is not None:
            validate_leaf_san(fields.san.get_values_for_type(x509.UniformResourceIdentifier),
                              critical=profile.san_critical, empty_subject=len(fields.subject) == 0)
            return _sign_leaf(authority, profile, fields, public_key)
        profile = LeafProfile.build(issuer=fields.issuer, ca_key=authority.key, subject=fields.subject,
                                    extensions=fields.extensions(public_key))
        der = _sign_leaf(authority, profile, fields, public_key)
        # Defence in depth on our own output (SPIRE's credvalidator), on the signed leaf itself.
        validate_leaf_profile(x509.load_der_x509_certificate(der))
        self._profiles.put(key, profile)
        return der


def _sign_leaf(authority: X509Authority, profile: LeafProfile, fields: LeafFields, public_key: CertPublicKey) -> bytes:
    tbs = profile.tbs(serial=fields.serial, not_before=fields.not_before, not_after=fields.not_after,
                      public_key=public_key, san=fields.san)
    return profile.certificate(tbs, _sign_bytes(authority.key, tbs))


LEAF_ENCODER: LeafEncoder = ProfileLeafEncoder()


def sign_jwt(claims: Mapping[str, Any], *, key: CaPrivateKey, kid: str) -> str:
    """Sign JWT-SVID claims with a JWT authority key."""
    return sign_jwt_svid(claims, key, kid)


def parse_csr(der: bytes) -> ParsedCsr:
    """Parse and verify a DER CSR from an untrusted caller."""
    csr, public_key = _verified_csr(der)
    uri, dns_names = _csr_sans(csr)
    return ParsedCsr(public_key=public_key, spiffe_id=None if uri is None else _csr_spiffe_id(uri),
                     dns_names=tuple(dns_names))


def public_key_from_csr(der: bytes, *, spiffe_id: SpiffeId) -> CertPublicKey:
    """The CSR's public key, after checking any URI SAN it carries is ``spiffe_id``."""
    csr, public_key = _verified_csr(der)
    uri, _ = _csr_sans(csr)
    # A URI equal to the ID's canonical string needs no parsing (the common case, once per CSR).
    if uri is not None and uri != str(spiffe_id) and _csr_spiffe_id(uri) != spiffe_id:
        raise InvalidCsrError(f"ca: csr spiffe id {uri!r} does not match {str(spiffe_id)!r}")
    return public_key


def _verified_csr(der: bytes) -> tuple[x509.CertificateSigningRequest, CertPublicKey]:
    if len(der) > MAX_CSR_BYTES:
        raise InvalidCsrError(f"ca: csr is larger than {MAX_CSR_BYTES} bytes")
    try:
        csr = x509.load_der_x509_csr(der)
    except (ValueError, x509.InvalidVersion) as err:
        raise InvalidCsrError("ca: malformed csr") from err
    try:  # the signature check decodes the public key too, so an unknown key algorithm fails there first
        public_key = csr.public_key()
        signature_valid = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm) as err:
        raise InvalidCsrError("ca: csr public key cannot be decoded") from err
    if not signature_valid:
        raise InvalidCsrError("ca: csr signature is invalid")
    if not _acceptable_key(public_key):
        raise InvalidCsrError(f"ca: csr public key must be ec p-256/p-384 or rsa >= {_MIN_RSA_BITS} bits")
    return csr, public_key


def _csr_spiffe_id(uri: str) -> SpiffeId:
    try:
        return SpiffeId.parse(uri)
    except InvalidSpiffeIdError as err:
        raise InvalidCsrError(f"ca: csr uri san is not a valid spiffe id: {err.reason}") from err


def _acceptable_key(key: object) -> TypeGuard[CertPublicKey]:
    if isinstance(key, rsa.RSAPublicKey):
        return key.key_size >= _MIN_RSA_BITS
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1)


def _csr_sans(csr: x509.CertificateSigningRequest) -> tuple[str | None, list[str]]:
    """The CSR's single URI SAN (or None) and its DNS SANs."""
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None, []
    except _EXTENSION_ERRORS as err:  # duplicate or undecodable extensions
        raise InvalidCsrError("ca: csr extensions are malformed") from err
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) > 1:
        raise InvalidCsrError(f"ca: csr must hold at most one uri san: {uris!r}")
    return (uris[0] if uris else None), san.get_values_for_type(x509.DNSName)
