"""Unsigned certificate templates and JWT claims (pure policy; never touches a private key).

SPIRE's credtemplate: TTL defaults, lifetime capping, subjects and extensions live here;
:mod:`spiffe_server.ca.signer` encodes and signs what these functions build::

    fields = leaf_fields(X509SvidParams(spiffe_id=sid, public_key=pub), policy=SvidPolicy(), issuer=ca_cert, now=now)
    claims = build_jwt_claims(JwtSvidParams(spiffe_id=sid, audience=("db",)), policy=SvidPolicy(),
                              key_expires_at=key_not_after, now=now)
"""

from __future__ import annotations

import enum
import functools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from spiffe_py._memo import Identity, Memo
from spiffe_py.spiffeid import SpiffeId, TrustDomain

DEFAULT_CA_TTL = timedelta(hours=24)
DEFAULT_X509_SVID_TTL = timedelta(hours=1)
DEFAULT_JWT_SVID_TTL = timedelta(minutes=5)
# SPIRE backdates NotBefore so small clock skew between hosts does not reject fresh SVIDs.
BACKDATE = timedelta(seconds=10)
# SVIDs up to min(ca_ttl/6, 7d) are never truncated by a CA rotation (SPIRE MaxSVIDTTLForCATTL).
_MAX_SAFE_SVID_TTL = timedelta(days=7)
_MAX_CN_LEN = 64  # RFC 5280 ub-common-name

CA_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
SVID_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIRE")])
RESERVED_JWT_CLAIMS = frozenset({"sub", "aud", "exp", "iat", "nbf", "jti", "iss"})

CertPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class SvidKind(enum.Enum):
    """Who an X.509-SVID is for; only the default TTL differs."""

    WORKLOAD = "workload"
    AGENT = "agent"
    SERVER = "server"


@dataclass(frozen=True, slots=True)
class SvidPolicy:
    """Server-wide SVID settings (SPIRE `default_*_svid_ttl`, `agent_ttl`, `jwt_issuer`)."""

    x509_svid_ttl: timedelta = DEFAULT_X509_SVID_TTL
    jwt_svid_ttl: timedelta = DEFAULT_JWT_SVID_TTL
    agent_svid_ttl: timedelta | None = None  # None: same as x509_svid_ttl
    jwt_issuer: str | None = None
    svid_subject: x509.Name = SVID_SUBJECT

    def __post_init__(self) -> None:
        for ttl in (self.x509_svid_ttl, self.jwt_svid_ttl, self.agent_svid_ttl):
            if ttl is not None and ttl <= timedelta(0):
                raise ValueError("ca: svid ttls must be positive")

    def default_x509_ttl(self, kind: SvidKind) -> timedelta:
        """Default X.509-SVID TTL for ``kind``."""
        if kind is SvidKind.AGENT and self.agent_svid_ttl is not None:
            return self.agent_svid_ttl
        return self.x509_svid_ttl


@dataclass(frozen=True, slots=True)
class X509SvidParams:
    """What to put in one X.509-SVID."""

    spiffe_id: SpiffeId
    public_key: CertPublicKey
    ttl: timedelta | None = None  # None: the policy default for ``kind``
    dns_names: tuple[str, ...] = ()  # the first one also becomes the subject CN
    expires_at: datetime | None = None  # hard end, e.g. the registration entry's expiry
    kind: SvidKind = SvidKind.WORKLOAD


@dataclass(frozen=True, slots=True)
class JwtSvidParams:
    """What to put in one JWT-SVID."""

    spiffe_id: SpiffeId
    audience: tuple[str, ...]
    ttl: timedelta | None = None  # None: the policy default
    expires_at: datetime | None = None
    extra_claims: Mapping[str, Any] = field(default_factory=dict)


def max_safe_svid_ttl(ca_ttl: timedelta) -> timedelta:
    """Longest SVID TTL that a CA rotation never truncates: min(ca_ttl/6, 7d)."""
    return min(ca_ttl / 6, _MAX_SAFE_SVID_TTL)


def svid_ttl_warnings(policy: SvidPolicy, ca_ttl: timedelta) -> tuple[str, ...]:
    """Warnings for default TTLs that CA rotation would cut short (SPIRE's startup check)."""
    limit = max_safe_svid_ttl(ca_ttl)
    named = {"default_x509_svid_ttl": policy.x509_svid_ttl, "default_jwt_svid_ttl": policy.jwt_svid_ttl,
             "agent_ttl": policy.agent_svid_ttl}
    return tuple(
        f"ca: {name} {ttl} is longer than ca_ttl/6 ({limit}); issued svids may be shorter than asked"
        for name, ttl in named.items()
        if ttl is not None and ttl > limit
    )


def capped_not_after(*, now: datetime, ttl: timedelta, caps: tuple[datetime | None, ...]) -> datetime:
    """``now + ttl`` limited by every non-None cap (CA expiry, entry expiry...)."""
    return min([now + ttl, *(cap for cap in caps if cap is not None)])


def random_serial() -> int:
    """A random positive 128-bit serial number (RFC 5280 §4.1.2.2 allows up to 20 octets)."""
    return secrets.randbits(127) | (1 << 127)


def subject_key_id(public_key: CertPublicKey) -> x509.SubjectKeyIdentifier:
    """SKI per RFC 5280 §4.2.1.2 method 1 (SHA-1 of the public key bits)."""
    return x509.SubjectKeyIdentifier.from_public_key(public_key)


def authority_id(cert: x509.Certificate) -> str:
    """SPIRE's X.509 authority ID: the hex subject key identifier."""
    return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()


def _authority_key_id(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:  # an upstream CA without SKI: derive it the same way (RFC 5280 method 1)
        issuer_key = issuer.public_key()
        if not isinstance(issuer_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ValueError("ca: issuer key must be ec or rsa") from None
        ski = subject_key_id(issuer_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_ca_template(
    *,
    trust_domain: TrustDomain,
    public_key: CertPublicKey,
    ttl: timedelta,
    now: datetime,
    issuer: x509.Certificate | None = None,
    subject: x509.Name = CA_SUBJECT,
) -> x509.CertificateBuilder:
    """A signing CA: self-signed root when ``issuer`` is None, else an intermediate capped at it."""
    serial = random_serial()
    # A unique subject per CA (SPIRE #4415): serialNumber=<serial>.
    name = x509.Name([*subject, x509.NameAttribute(NameOID.SERIAL_NUMBER, str(serial))])
    not_after = capped_not_after(now=now, ttl=ttl, caps=(issuer.not_valid_after_utc if issuer else None,))
    if issuer is None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    else:
        aki = _authority_key_id(issuer)
    return (
        x509.CertificateBuilder()
        .serial_number(serial)
        .subject_name(name)
        .issuer_name(name if issuer is None else issuer.subject)
        .public_key(public_key)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)  # X5-09/10/12
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(trust_domain.id_string())]), critical=False)  # X5-05/06
        .add_extension(subject_key_id(public_key), critical=False)
        .add_extension(aki, critical=False)
    )


@dataclass(frozen=True, slots=True)
class LeafFields:
    """Everything in one leaf X.509-SVID except its public key (and the SKI derived from it)."""

    serial: int
    not_before: datetime
    not_after: datetime
    issuer: x509.Name
    subject: x509.Name
    san: x509.SubjectAlternativeName
    aki: x509.AuthorityKeyIdentifier

    def extensions(self, public_key: CertPublicKey) -> list[x509.Extension[x509.ExtensionType]]:
        """The leaf's extensions in encoding order (X5-04/08/09/11/13)."""
        return [
            x509.Extension(_LEAF_BASIC_CONSTRAINTS.oid, True, _LEAF_BASIC_CONSTRAINTS),  # X5-08
            x509.Extension(_LEAF_KEY_USAGE.oid, True, _LEAF_KEY_USAGE),  # X5-09/11
            x509.Extension(_LEAF_EKU.oid, False, _LEAF_EKU),  # X5-13
            x509.Extension(self.san.oid, len(self.subject) == 0, self.san),  # X5-04
            x509.Extension(x509.SubjectKeyIdentifier.oid, False, subject_key_id(public_key)),
            # cryptography's verifier refuses leaves without AKI.
            x509.Extension(self.aki.oid, False, self.aki),
        ]


def leaf_fields(params: X509SvidParams, *, policy: SvidPolicy, issuer: x509.Certificate, now: datetime) -> LeafFields:
    """The fields of a leaf X.509-SVID signed by ``issuer``; lifetime capped at the issuer's NotAfter."""
    if params.spiffe_id.is_root:
        raise ValueError(f"ca: x509-svid id must have a path: {str(params.spiffe_id)!r}")  # X5-03
    issued_by = _ISSUERS.get_or_build(Identity(issuer), lambda: _issuer_parts(issuer))
    ttl = params.ttl if params.ttl is not None else policy.default_x509_ttl(params.kind)
    not_after = capped_not_after(now=now, ttl=ttl, caps=(issued_by.not_after, params.expires_at))
    if not_after <= now:
        raise ValueError("ca: x509-svid lifetime would be empty (issuer or entry already expired)")
    subject, san = _leaf_names(policy.svid_subject, str(params.spiffe_id), params.dns_names)
    return LeafFields(serial=random_serial(), not_before=now - BACKDATE, not_after=not_after,
                      issuer=issued_by.subject, subject=subject, san=san, aki=issued_by.aki)


@dataclass(frozen=True, slots=True)
class _IssuerParts:
    """What every leaf of one issuer shares: read from its certificate once, not per leaf."""

    subject: x509.Name
    not_after: datetime
    aki: x509.AuthorityKeyIdentifier


def _issuer_parts(issuer: x509.Certificate) -> _IssuerParts:
    return _IssuerParts(subject=issuer.subject, not_after=issuer.not_valid_after_utc, aki=_authority_key_id(issuer))


# One CA signs almost every leaf until it rotates; a few slots cover prepared and tainted ones.
_ISSUERS: Memo[Identity, _IssuerParts] = Memo(max_size=8)


@functools.lru_cache(maxsize=1024)
def _leaf_names(base: x509.Name, spiffe_id: str, dns_names: tuple[str, ...],
                ) -> tuple[x509.Name, x509.SubjectAlternativeName]:
    """The subject and SAN of a leaf; the same for every SVID of an entry, so built once per entry."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]  # X5-01
    sans.extend(x509.DNSName(name) for name in dns_names)
    return _svid_subject(base, dns_names), x509.SubjectAlternativeName(sans)


def build_jwt_claims(
    params: JwtSvidParams, *, policy: SvidPolicy, key_expires_at: datetime, now: datetime
) -> dict[str, Any]:
    """JWT-SVID claims; ``exp`` capped at the signing key's expiry and the params' hard end."""
    if not params.audience or not all(params.audience):
        raise ValueError("ca: jwt-svid audience must hold at least one non-empty value")  # JWT-08
    if params.spiffe_id.is_root:
        raise ValueError(f"ca: jwt-svid id must have a path: {str(params.spiffe_id)!r}")
    reserved = RESERVED_JWT_CLAIMS.intersection(params.extra_claims)
    if reserved:
        raise ValueError(f"ca: extra claims cannot override reserved claims: {sorted(reserved)!r}")
    ttl = params.ttl if params.ttl is not None else policy.jwt_svid_ttl
    exp = capped_not_after(now=now, ttl=ttl, caps=(key_expires_at, params.expires_at))
    if exp <= now:
        raise ValueError("ca: jwt-svid lifetime would be empty (key or entry already expired)")
    claims: dict[str, Any] = dict(params.extra_claims)
    # jti in hex: a base64url one may start with "-" and break `revoke svid --jti VALUE`.
    claims.update(sub=str(params.spiffe_id), aud=list(params.audience), iat=int(now.timestamp()),
                  exp=int(exp.timestamp()), jti=secrets.token_hex(16))
    if policy.jwt_issuer:
        claims["iss"] = policy.jwt_issuer
    return claims


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    # X5-11/12: digitalSignature, keyEncipherment and keyAgreement are leaf-only; CAs sign certs and CRLs.
    return x509.KeyUsage(
        digital_signature=not ca, content_commitment=False, key_encipherment=not ca, data_encipherment=False,
        key_agreement=not ca, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False,
    )


_LEAF_BASIC_CONSTRAINTS = x509.BasicConstraints(ca=False, path_length=None)
_LEAF_KEY_USAGE = _key_usage(ca=False)
_LEAF_EKU = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])


def _svid_subject(base: x509.Name, dns_names: tuple[str, ...]) -> x509.Name:
    # SPIRE puts the first DNS name in the CN; a CN longer than the X.520 bound is left out.
    if dns_names and len(dns_names[0]) <= _MAX_CN_LEN:
        return x509.Name([*base, x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    return base
