"""Trust bundles: X.509 authorities, JWT authorities and the SPIFFE bundle (JWKS) format.

Bundles are immutable; ``with_*`` methods return new objects::

    td = TrustDomain.parse("example.org")
    bundle = SpiffeBundle.parse(td, jwks_bytes)           # SPIFFE_Trust_Domain_and_Bundle §4
    bundles = BundleSet.of(bundle)                        # X509BundleSource and JwtBundleSource
    roots = bundles.get_x509_bundle_for_trust_domain(td).authorities
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from spiffe_py import _jwk, _pem
from spiffe_py._json import JsonError, dump, load_object
from spiffe_py.errors import BundleNotFoundError, InvalidBundleError, InvalidSpiffeIdError
from spiffe_py.spiffeid import TrustDomain

MAX_BUNDLE_BYTES = 1024 * 1024
MAX_BUNDLE_MAP_BYTES = 16 * 1024 * 1024
MAX_KEYS = 1000
MAX_UINT64 = 2**64 - 1
USE_X509_SVID = "x509-svid"
USE_JWT_SVID = "jwt-svid"


def _fail(message: str) -> InvalidBundleError:
    return InvalidBundleError(f"bundle: {message}")


class X509BundleSource(Protocol):
    """Anything that can hand out the X.509 bundle of a trust domain."""

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        """The trust domain's X.509 bundle; raises BundleNotFoundError if unknown."""
        ...


class JwtBundleSource(Protocol):
    """Anything that can hand out the JWT bundle of a trust domain."""

    def get_jwt_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> JwtBundle:
        """The trust domain's JWT bundle; raises BundleNotFoundError if unknown."""
        ...


def _x509_authorities(decode: Callable[[bytes], list[x509.Certificate]], data: bytes) -> tuple[x509.Certificate, ...]:
    try:
        return tuple(decode(data))
    except _pem.DecodeError as err:
        raise _fail(f"invalid x509 bundle: {err}") from err


def _not_found(kind: str, trust_domain: TrustDomain) -> BundleNotFoundError:
    return BundleNotFoundError(f"bundle: no {kind} bundle for trust domain {trust_domain.name!r}", trust_domain.name)


@dataclass(frozen=True, slots=True)
class X509Bundle:
    """The X.509 authorities (root CA certificates) of one trust domain."""

    trust_domain: TrustDomain
    authorities: tuple[x509.Certificate, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "authorities", tuple(dict.fromkeys(self.authorities)))

    @classmethod
    def parse_pem(cls, trust_domain: TrustDomain, data: bytes) -> X509Bundle:
        """Parse PEM CERTIFICATE blocks (no blocks: an empty bundle)."""
        return cls(trust_domain, _x509_authorities(_pem.certificates_from_pem, data))

    @classmethod
    def parse_der(cls, trust_domain: TrustDomain, data: bytes) -> X509Bundle:
        """Parse concatenated DER certificates (the Workload API form)."""
        return cls(trust_domain, _x509_authorities(_pem.certificates_from_der, data))

    def to_pem(self) -> bytes:
        """Concatenated PEM certificates."""
        return _pem.certificates_to_pem(self.authorities)

    def to_der(self) -> bytes:
        """Concatenated DER certificates."""
        return _pem.certificates_to_der(self.authorities)

    def with_authority(self, cert: x509.Certificate) -> X509Bundle:
        """A copy with ``cert`` added (no-op if present)."""
        return X509Bundle(self.trust_domain, (*self.authorities, cert))

    def without_authority(self, cert: x509.Certificate) -> X509Bundle:
        """A copy without ``cert``."""
        return X509Bundle(self.trust_domain, tuple(a for a in self.authorities if a != cert))

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        """This bundle if it is for ``trust_domain``; else BundleNotFoundError."""
        if trust_domain != self.trust_domain:
            raise _not_found("x509", trust_domain)
        return self


def _check_jwt_authorities(authorities: Mapping[str, PublicKeyTypes]) -> None:
    for kid, key in authorities.items():
        if not isinstance(kid, str) or not kid:
            raise ValueError("jwt authority key ids must be non-empty strings")
        _jwk.key_to_jwk(key)  # raises TypeError/ValueError for keys JOSE cannot carry


@dataclass(frozen=True, slots=True)
class JwtBundle:
    """The JWT authorities (key id -> public key) of one trust domain."""

    trust_domain: TrustDomain
    authorities: Mapping[str, PublicKeyTypes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_jwt_authorities(self.authorities)
        object.__setattr__(self, "authorities", MappingProxyType(dict(self.authorities)))

    @classmethod
    def parse_jwks(cls, trust_domain: TrustDomain, data: bytes) -> JwtBundle:
        """Parse a JWKS document and keep its ``jwt-svid`` keys (JWT-15)."""
        return SpiffeBundle.parse(trust_domain, data).jwt_bundle()

    def to_jwks(self) -> bytes:
        """A JWKS document with one ``jwt-svid`` JWK per authority."""
        return dump({"keys": _jwt_jwks(self.authorities)})

    def find(self, kid: str) -> PublicKeyTypes:
        """The authority with key id ``kid``; raises BundleNotFoundError if absent."""
        try:
            return self.authorities[kid]
        except KeyError:
            raise BundleNotFoundError(
                f"bundle: no jwt authority with key id {kid[:128]!r} in trust domain {self.trust_domain.name!r}",
                self.trust_domain.name,
            ) from None

    def with_authority(self, kid: str, key: PublicKeyTypes) -> JwtBundle:
        """A copy with ``kid`` set to ``key``."""
        return JwtBundle(self.trust_domain, {**self.authorities, kid: key})

    def without_authority(self, kid: str) -> JwtBundle:
        """A copy without ``kid``."""
        return JwtBundle(self.trust_domain, {k: v for k, v in self.authorities.items() if k != kid})

    def get_jwt_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> JwtBundle:
        """This bundle if it is for ``trust_domain``; else BundleNotFoundError."""
        if trust_domain != self.trust_domain:
            raise _not_found("jwt", trust_domain)
        return self


def _jwt_jwks(authorities: Mapping[str, PublicKeyTypes]) -> list[dict[str, Any]]:
    return [{**_jwk.key_to_jwk(key), "use": USE_JWT_SVID, "kid": kid} for kid, key in authorities.items()]


def _x509_jwks(authorities: Iterable[x509.Certificate]) -> list[dict[str, Any]]:
    # X5-19/X5-20: use=x509-svid, no kid, x5c = exactly one standard-base64 DER certificate.
    return [
        {
            **_jwk.key_to_jwk(cert.public_key()),
            "use": USE_X509_SVID,
            "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        for cert in authorities
    ]


@dataclass(frozen=True, slots=True)
class SpiffeBundle:
    """A trust domain's bundle in SPIFFE bundle format: X.509 and JWT authorities plus metadata."""

    trust_domain: TrustDomain
    x509_authorities: tuple[x509.Certificate, ...] = ()
    jwt_authorities: Mapping[str, PublicKeyTypes] = field(default_factory=dict)
    sequence_number: int | None = None
    refresh_hint: timedelta | None = None

    def __post_init__(self) -> None:
        _check_jwt_authorities(self.jwt_authorities)
        object.__setattr__(self, "x509_authorities", tuple(dict.fromkeys(self.x509_authorities)))
        object.__setattr__(self, "jwt_authorities", MappingProxyType(dict(self.jwt_authorities)))
        if self.sequence_number is not None and not 0 <= self.sequence_number <= MAX_UINT64:
            raise ValueError("sequence_number must fit in a uint64")
        if self.refresh_hint is not None and (self.refresh_hint.total_seconds() < 0 or self.refresh_hint.microseconds):
            raise ValueError("refresh_hint must be a whole, non-negative number of seconds")

    @classmethod
    def parse(cls, trust_domain: TrustDomain, data: bytes) -> SpiffeBundle:
        """Parse a SPIFFE bundle (JWKS with ``spiffe_sequence`` / ``spiffe_refresh_hint``)."""
        try:
            doc = load_object(data, max_bytes=MAX_BUNDLE_BYTES)
        except JsonError as err:
            raise _fail(str(err)) from err
        return cls._from_document(trust_domain, doc)

    @classmethod
    def _from_document(cls, trust_domain: TrustDomain, doc: Mapping[str, Any]) -> SpiffeBundle:
        keys = doc.get("keys")  # TDB-06: required, may be empty
        if not isinstance(keys, list):
            raise _fail("'keys' must be present and be a list")
        if len(keys) > MAX_KEYS:
            raise _fail(f"more than {MAX_KEYS} keys")
        x509_authorities: list[x509.Certificate] = []
        jwt_authorities: dict[str, PublicKeyTypes] = {}
        for jwk in keys:
            _add_key(jwk, x509_authorities, jwt_authorities)
        return cls(
            trust_domain,
            tuple(x509_authorities),
            jwt_authorities,
            _optional_uint(doc, "spiffe_sequence", MAX_UINT64),
            _optional_seconds(doc, "spiffe_refresh_hint"),
        )

    def to_json(self) -> bytes:
        """The SPIFFE bundle JWKS document."""
        doc: dict[str, Any] = {"keys": [*_x509_jwks(self.x509_authorities), *_jwt_jwks(self.jwt_authorities)]}
        if self.sequence_number is not None:
            doc["spiffe_sequence"] = self.sequence_number
        if self.refresh_hint is not None:
            doc["spiffe_refresh_hint"] = int(self.refresh_hint.total_seconds())
        return dump(doc)

    def x509_bundle(self) -> X509Bundle:
        """The X.509 part."""
        return X509Bundle(self.trust_domain, self.x509_authorities)

    def jwt_bundle(self) -> JwtBundle:
        """The JWT part."""
        return JwtBundle(self.trust_domain, self.jwt_authorities)

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        """The X.509 part if this bundle is for ``trust_domain``; else BundleNotFoundError."""
        return self.x509_bundle().get_x509_bundle_for_trust_domain(trust_domain)

    def get_jwt_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> JwtBundle:
        """The JWT part if this bundle is for ``trust_domain``; else BundleNotFoundError."""
        return self.jwt_bundle().get_jwt_bundle_for_trust_domain(trust_domain)


def _optional_uint(doc: Mapping[str, Any], name: str, maximum: int) -> int | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise _fail(f"{name!r} must be an integer in 0..{maximum}")
    return value


def _optional_seconds(doc: Mapping[str, Any], name: str) -> timedelta | None:
    # TDB-05: integer seconds; bounded so timedelta cannot overflow (100 years is plenty).
    seconds = _optional_uint(doc, name, 100 * 365 * 86400)
    return None if seconds is None else timedelta(seconds=seconds)


def _add_key(jwk: object, x509_out: list[x509.Certificate], jwt_out: dict[str, PublicKeyTypes]) -> None:
    """Add one JWK's authority; unknown ``use``/``kty`` are ignored (TDB-07, TDB-10, TDB-11)."""
    if not isinstance(jwk, dict):
        raise _fail("each entry of 'keys' must be an object")
    use = jwk.get("use")
    if use not in (USE_X509_SVID, USE_JWT_SVID):
        return
    cert = _x5c_certificate(jwk) if use == USE_X509_SVID else None
    if use == USE_X509_SVID and cert is None:
        return
    try:
        key = _jwk.key_from_jwk(jwk)
    except _jwk.JwkError as err:
        raise _fail(f"invalid {use} jwk: {err}") from err
    if key is None:
        return
    if cert is not None:
        if cert.public_key() != key:
            raise _fail("x509-svid jwk key does not match its x5c certificate")
        x509_out.append(cert)
        return
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise _fail("jwt-svid jwk is missing 'kid'")
    if kid in jwt_out:
        raise _fail(f"duplicate jwt-svid key id {kid[:128]!r}")
    jwt_out[kid] = key


def _x5c_certificate(jwk: Mapping[str, Any]) -> x509.Certificate | None:
    """The first ``x5c`` certificate; None when ``x5c`` is missing or empty (X5-21)."""
    x5c = jwk.get("x5c")
    if x5c is None or x5c == []:
        return None
    if not isinstance(x5c, list) or not isinstance(x5c[0], str):
        raise _fail("'x5c' must be a list of base64 strings")
    if not x5c[0]:
        return None
    try:
        certs = _pem.certificates_from_der(base64.b64decode(x5c[0], validate=True))
    except (ValueError, _pem.DecodeError) as err:  # ValueError: binascii.Error, or a non-ASCII string
        raise _fail("'x5c' does not hold a base64 der certificate") from err
    if len(certs) != 1:  # X5-20: exactly one certificate per x5c value
        raise _fail("'x5c' value must hold exactly one certificate")
    return certs[0]


def parse_bundle_map(data: bytes) -> dict[TrustDomain, SpiffeBundle]:
    """Parse a bundle map ``{"trust_domains": {td: bundle, ...}}`` (TDB-12, TDB-13)."""
    try:
        doc = load_object(data, max_bytes=MAX_BUNDLE_MAP_BYTES)
    except JsonError as err:
        raise _fail(str(err)) from err
    entries = doc.get("trust_domains")
    if not isinstance(entries, dict):
        raise _fail("'trust_domains' must be present and be an object")
    result: dict[TrustDomain, SpiffeBundle] = {}
    for name, bundle_doc in entries.items():
        try:
            trust_domain = TrustDomain.parse_id(name) if ":/" in name else TrustDomain.parse(name)
        except InvalidSpiffeIdError as err:
            raise _fail(f"invalid trust domain in bundle map: {err.reason}") from err
        if trust_domain in result:
            raise _fail(f"duplicate trust domain {trust_domain.name!r}")
        if not isinstance(bundle_doc, dict):
            raise _fail(f"bundle for {trust_domain.name!r} must be an object")
        result[trust_domain] = SpiffeBundle._from_document(trust_domain, bundle_doc)
    return result


AnyBundle = X509Bundle | JwtBundle | SpiffeBundle


@dataclass(frozen=True, slots=True)
class BundleSet:
    """X.509 and JWT bundles of several trust domains; never pools them (WA-09)."""

    x509: Mapping[TrustDomain, X509Bundle] = field(default_factory=dict)
    jwt: Mapping[TrustDomain, JwtBundle] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "x509", MappingProxyType(dict(self.x509)))
        object.__setattr__(self, "jwt", MappingProxyType(dict(self.jwt)))

    @classmethod
    def of(cls, *bundles: AnyBundle) -> BundleSet:
        """A set from bundles; a trust domain may appear once per kind (ValueError otherwise)."""
        result = cls()
        for bundle in bundles:
            if _overlaps(result, bundle):
                raise ValueError(f"bundle set: trust domain {bundle.trust_domain.name!r} given twice")
            result = result.with_bundle(bundle)
        return result

    def with_bundle(self, bundle: AnyBundle) -> BundleSet:
        """A copy where ``bundle`` replaces that trust domain's bundle(s) of the same kind."""
        x509_map, jwt_map = dict(self.x509), dict(self.jwt)
        if isinstance(bundle, X509Bundle | SpiffeBundle):
            x509_map[bundle.trust_domain] = bundle if isinstance(bundle, X509Bundle) else bundle.x509_bundle()
        if isinstance(bundle, JwtBundle | SpiffeBundle):
            jwt_map[bundle.trust_domain] = bundle if isinstance(bundle, JwtBundle) else bundle.jwt_bundle()
        return BundleSet(x509_map, jwt_map)

    def x509_bundles(self) -> tuple[X509Bundle, ...]:
        """All X.509 bundles, sorted by trust domain."""
        return tuple(self.x509[td] for td in sorted(self.x509))

    def jwt_bundles(self) -> tuple[JwtBundle, ...]:
        """All JWT bundles, sorted by trust domain."""
        return tuple(self.jwt[td] for td in sorted(self.jwt))

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        """The trust domain's X.509 bundle; raises BundleNotFoundError if unknown."""
        try:
            return self.x509[trust_domain]
        except KeyError:
            raise _not_found("x509", trust_domain) from None

    def get_jwt_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> JwtBundle:
        """The trust domain's JWT bundle; raises BundleNotFoundError if unknown."""
        try:
            return self.jwt[trust_domain]
        except KeyError:
            raise _not_found("jwt", trust_domain) from None


def _overlaps(bundles: BundleSet, bundle: AnyBundle) -> bool:
    td = bundle.trust_domain
    in_x509 = isinstance(bundle, X509Bundle | SpiffeBundle) and td in bundles.x509
    return in_x509 or (isinstance(bundle, JwtBundle | SpiffeBundle) and td in bundles.jwt)
