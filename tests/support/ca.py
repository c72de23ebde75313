"""A test CA that mints SPIFFE chains on the fly, with switches to inject each profile defect.

Everything is real X.509 (cryptography); certificates carry SKI/AKI so that
``cryptography.x509.verification`` and ``openssl verify`` accept good chains::

    ca = CA.create("example.org", now=NOW)                # self-signed root, spiffe://example.org
    mid = ca.child_ca()                                   # intermediate signed by the root
    svid = mid.issue_svid("spiffe://example.org/web")     # Issued: chain (leaf, mid), key
    X509Svid.parse(svid.chain_pem(), svid.key_pem())
    bad = ca.issue_svid("spiffe://example.org/web", is_ca=True)         # fixture "leaf-is-ca"
    two = ca.issue_svid("spiffe://example.org/web", uris=["spiffe://example.org/a", "spiffe://example.org/b"])
    crl = ca.crl([svid.leaf.serial_number])
    token = ca.sign_jwt({"sub": "spiffe://example.org/web", "aud": ["x"], "exp": ...})

Defect switches (keyword arguments of ``issue_svid`` / ``child_ca``; see :class:`CertOptions`):
``uris``, ``dns_names``, ``subject``, ``san_critical``, ``is_ca`` (None: no BasicConstraints),
``path_length``, ``key_usage`` (None: no KeyUsage), ``key_usage_critical``, ``eku`` (None: no EKU),
``aki``, ``ski``, ``not_before``, ``not_after``, ``serial``, ``signer_key`` (sign with another key).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spiffe_py import _pem
from spiffe_py.bundle import JwtBundle, SpiffeBundle, X509Bundle
from spiffe_py.spiffeid import SpiffeId, TrustDomain

KeyType = Literal["ec-p256", "ec-p384", "ec-p521", "rsa-2048", "rsa-3072", "rsa-4096"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1(), "ec-p521": ec.SECP521R1()}


_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def key_usage(**flags: bool) -> x509.KeyUsage:
    """A KeyUsage with only the given flags set, e.g. ``key_usage(digital_signature=True, crl_sign=True)``."""
    unknown = set(flags) - set(_KEY_USAGE_FLAGS)
    if unknown:
        raise TypeError(f"unknown key usage flags: {sorted(unknown)}")
    return x509.KeyUsage(**{name: flags.get(name, False) for name in _KEY_USAGE_FLAGS})


LEAF_KEY_USAGE = key_usage(digital_signature=True)
CA_KEY_USAGE = key_usage(key_cert_sign=True, crl_sign=True)
SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)


def generate_key(key_type: KeyType = "ec-p256") -> PrivateKey:
    """A fresh private key."""
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type])
    return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type.split("-")[1]))


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    wide_ec = isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256
    return hashes.SHA384() if wide_ec else hashes.SHA256()


@dataclass(frozen=True)
class CertOptions:
    """How to build one certificate; each field is a switch for a defect fixture."""

    uris: Sequence[str] | None = None  # None: the SPIFFE ID; [] no URI SAN
    dns_names: Sequence[str] = ()
    subject: x509.Name | None = None  # None: O=SPIFFE (+ CN for CAs); an empty Name makes the SAN critical
    san_critical: bool | None = None  # None: critical iff the subject is empty (X5-04)
    is_ca: bool | None = False  # None: omit BasicConstraints
    path_length: int | None = None
    key_usage: x509.KeyUsage | None = LEAF_KEY_USAGE
    key_usage_critical: bool = True
    eku: Sequence[x509.ObjectIdentifier] | None = SERVER_AND_CLIENT
    aki: bool = True
    ski: bool = True
    not_before: datetime | None = None
    not_after: datetime | None = None
    serial: int | None = None
    signer_key: PrivateKey | None = None  # sign with this key instead of the issuer's (bad signature)


LEAF_OPTIONS = CertOptions()
CA_OPTIONS = CertOptions(is_ca=True, key_usage=CA_KEY_USAGE, eku=None)


@dataclass(frozen=True)
class Issued:
    """An issued SVID: the chain (leaf first, intermediates after, no root) and its private key."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        """The leaf certificate."""
        return self.chain[0]

    def chain_pem(self) -> bytes:
        """The chain as concatenated PEM."""
        return _pem.certificates_to_pem(self.chain)

    def chain_der(self) -> bytes:
        """The chain as concatenated DER (Workload API form)."""
        return _pem.certificates_to_der(self.chain)

    def key_pem(self) -> bytes:
        """The key as PKCS#8 PEM."""
        return _pem.private_key_to_pem(self.key)

    def key_der(self) -> bytes:
        """The key as PKCS#8 DER."""
        return _pem.private_key_to_der(self.key)


def _build(
    spiffe_id: str,
    public_key: Any,
    issuer: x509.Certificate | None,
    issuer_key: PrivateKey,
    options: CertOptions,
    *,
    now: datetime,
    ttl: timedelta,
    common_name: str,
) -> x509.Certificate:
    subject = options.subject
    if subject is None:
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]
        if common_name:
            attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        subject = x509.Name(attributes)
    uris = [spiffe_id] if options.uris is None else list(options.uris)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    names += [x509.DNSName(d) for d in options.dns_names]
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(options.serial or x509.random_serial_number())
        .not_valid_before(options.not_before or now - timedelta(seconds=60))
        .not_valid_after(options.not_after or now + ttl)
    )
    if names:
        critical = len(subject) == 0 if options.san_critical is None else options.san_critical
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=critical)
    if options.is_ca is not None:
        path_length = options.path_length if options.is_ca else None
        builder = builder.add_extension(x509.BasicConstraints(ca=options.is_ca, path_length=path_length), critical=True)
    if options.key_usage is not None:
        builder = builder.add_extension(options.key_usage, critical=options.key_usage_critical)
    if options.eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(options.eku)), critical=False)
    if options.ski:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if options.aki:
        authority_public = (issuer_key if issuer is None else issuer).public_key()
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_public)  # type: ignore[arg-type]
        builder = builder.add_extension(aki, critical=False)
    signer = options.signer_key or issuer_key
    return builder.sign(signer, _hash_for(signer))


def _options(base: CertOptions, overrides: Mapping[str, Any]) -> CertOptions:
    return dataclasses.replace(base, **overrides)


@dataclass
class CA:
    """A root or intermediate CA of one trust domain (see the module docstring)."""

    trust_domain: TrustDomain
    cert: x509.Certificate
    key: PrivateKey
    now: datetime
    parent: CA | None = None
    jwt_key: PrivateKey | None = field(default=None, repr=False)
    jwt_kid: str = "jwt-key-1"

    @classmethod
    def create(
        cls,
        trust_domain: str | TrustDomain = "example.org",
        *,
        now: datetime | None = None,
        key_type: KeyType = "ec-p256",
        ttl: timedelta = timedelta(days=1),
        **defects: Any,
    ) -> CA:
        """A self-signed root CA with URI SAN ``spiffe://<td>``; ``now`` defaults to the wall clock."""
        td = trust_domain if isinstance(trust_domain, TrustDomain) else TrustDomain.parse(trust_domain)
        when = (now or datetime.now(UTC)).replace(microsecond=0)
        key = generate_key(key_type)
        options = _options(CA_OPTIONS, defects)
        cert = _build(td.id_string(), key.public_key(), None, key, options, now=when, ttl=ttl, common_name="root")
        return cls(td, cert, key, when)

    def child_ca(self, *, key_type: KeyType = "ec-p256", ttl: timedelta = timedelta(hours=12), **defects: Any) -> CA:
        """An intermediate CA signed by this CA (URI SAN ``spiffe://<td>``)."""
        key = generate_key(key_type)
        options = _options(CA_OPTIONS, defects)
        cert = _build(
            self.trust_domain.id_string(), key.public_key(), self.cert, self.key, options,
            now=self.now, ttl=ttl, common_name="intermediate",
        )  # fmt: skip
        return CA(self.trust_domain, cert, key, self.now, parent=self)

    def issue_svid(
        self,
        spiffe_id: str | SpiffeId,
        *,
        key: PrivateKey | None = None,
        key_type: KeyType = "ec-p256",
        ttl: timedelta = timedelta(hours=1),
        **defects: Any,
    ) -> Issued:
        """An X509-SVID leaf for ``spiffe_id`` signed by this CA, with this CA's intermediates."""
        key = key or generate_key(key_type)
        options = _options(LEAF_OPTIONS, defects)
        leaf = _build(
            str(spiffe_id), key.public_key(), self.cert, self.key, options, now=self.now, ttl=ttl, common_name=""
        )
        return Issued((leaf, *self.intermediates()), key)

    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """This CA's certificate and its parents', excluding the root (empty for a root)."""
        if self.parent is None:
            return ()
        return (self.cert, *self.parent.intermediates())

    @property
    def root(self) -> CA:
        """The root CA of this chain."""
        return self if self.parent is None else self.parent.root

    def x509_bundle(self) -> X509Bundle:
        """An X509Bundle holding the root certificate."""
        return X509Bundle(self.trust_domain, (self.root.cert,))

    def crl(
        self,
        revoked: Iterable[int | x509.Certificate],
        *,
        signer_key: PrivateKey | None = None,
        next_update: timedelta = timedelta(hours=1),
    ) -> x509.CertificateRevocationList:
        """A CRL issued by this CA listing the given serials/certificates."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.cert.subject)
            .last_update(self.now - timedelta(seconds=60))
            .next_update(self.now + next_update)
        )
        for item in revoked:
            serial = item if isinstance(item, int) else item.serial_number
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(self.now).build()
            builder = builder.add_revoked_certificate(entry)
        signer = signer_key or self.key
        return builder.sign(signer, _hash_for(signer))

    def jwt_signing_key(self, key_type: KeyType = "ec-p256") -> PrivateKey:
        """The root's JWT signing key (created on first use with ``key_type``)."""
        root = self.root
        if root.jwt_key is None:
            root.jwt_key = generate_key(key_type)
        return root.jwt_key

    def jwt_bundle(self) -> JwtBundle:
        """A JwtBundle with the root's JWT key under ``jwt_kid``."""
        return JwtBundle(self.trust_domain, {self.root.jwt_kid: self.jwt_signing_key().public_key()})

    def spiffe_bundle(self, *, sequence_number: int | None = 1, refresh_hint: timedelta | None = None) -> SpiffeBundle:
        """A SpiffeBundle with the root certificate and the JWT key."""
        return SpiffeBundle(
            self.trust_domain,
            (self.root.cert,),
            {self.root.jwt_kid: self.jwt_signing_key().public_key()},
            sequence_number,
            refresh_hint,
        )

    def sign_jwt(self, claims: Mapping[str, Any]) -> str:
        """A JWT-SVID over ``claims`` signed with the root's JWT key (via spiffe_py.jwtsvid)."""
        from spiffe_py.jwtsvid import sign_jwt_svid

        return sign_jwt_svid(claims, self.jwt_signing_key(), self.root.jwt_kid)
