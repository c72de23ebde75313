"""Federation relationships and the checks a fetched foreign bundle must pass (pure, no I/O).

::

    rel = parse_relationship("b.test", "https://127.0.0.1:8443", "https_spiffe",
                             "spiffe://b.test/spire/server", own=TrustDomain("a.test"))
    bundle = check_fetched_bundle(rel.trust_domain, body, previous=last_good)   # FetchRefused if bad
    delay = refresh_interval(bundle.refresh_hint)                               # bounded

The SPIFFE Federation spec requires the trust domain, URL and profile to be configured
explicitly (never inferred from the URL, never falling back from one profile to the other),
an ``https`` URL without userinfo, and for ``https_spiffe`` the endpoint's SPIFFE ID.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from cryptography import x509

from spiffe_py.bundle import MAX_BUNDLE_BYTES, SpiffeBundle, X509Bundle
from spiffe_py.errors import InvalidBundleError, SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain

DEFAULT_REFRESH = timedelta(minutes=5)  # a bundle without spiffe_refresh_hint (TDB-15, FED-03)
MIN_REFRESH = timedelta(seconds=1)  # a hostile or broken hint cannot make us poll in a tight loop
MAX_REFRESH = timedelta(hours=1)  # nor stop us from noticing a rotation for days
MAX_URL = 2048


class Profile(enum.StrEnum):
    """How the bundle endpoint is authenticated."""

    HTTPS_WEB = "https_web"  # a web PKI certificate for the URL's host (the system trust store)
    HTTPS_SPIFFE = "https_spiffe"  # an X509-SVID with the configured SPIFFE ID


class RelationshipError(SpiffeError, ValueError):
    """A relationship's settings are invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class FetchRefused(SpiffeError):
    """A fetched bundle (or the endpoint serving it) failed a check; the last good bundle stays.

    ``reason`` is a short fixed word for logs and the refresh metric.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Relationship:
    """Where and how a foreign trust domain's bundle is fetched. ``source``: "config" or "api"."""

    trust_domain: TrustDomain
    bundle_endpoint_url: str
    profile: Profile
    endpoint_spiffe_id: SpiffeId | None = None
    source: str = "api"


def check_url(url: str) -> str:
    """An https URL with a host, no userinfo, query-free fragment; kept exactly as given (FED-10)."""
    if not url or len(url) > MAX_URL or not url.isascii() or not url.isprintable() or " " in url:
        raise RelationshipError("bundle_endpoint_url", f"must be a printable ASCII URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as err:
        raise RelationshipError("bundle_endpoint_url", f"not a valid URL: {err}") from err
    if parts.scheme != "https" or not parts.hostname:
        raise RelationshipError("bundle_endpoint_url", f"must be an https:// URL with a host, got {url[:200]!r}")
    if parts.username is not None or parts.password is not None:
        raise RelationshipError("bundle_endpoint_url", "must not carry userinfo")
    if parts.fragment or "#" in url:
        raise RelationshipError("bundle_endpoint_url", "must not have a fragment")
    return url


def parse_relationship(trust_domain: str, url: str, profile: str, endpoint_spiffe_id: str, *,
                       own: TrustDomain, source: str = "api") -> Relationship:
    """Validate one relationship's settings (from the config or the admin API)."""
    try:
        td = TrustDomain.parse(trust_domain)
    except SpiffeError as err:
        raise RelationshipError("trust_domain", str(err)) from err
    if td == own:
        raise RelationshipError("trust_domain", f"{td.name!r} is this server's own trust domain")
    try:
        prof = Profile(profile)
    except ValueError:
        raise RelationshipError("bundle_endpoint_profile",
                                f"must be https_web or https_spiffe, got {profile[:100]!r}") from None
    endpoint_id = None
    if prof is Profile.HTTPS_SPIFFE:
        if not endpoint_spiffe_id:
            raise RelationshipError("endpoint_spiffe_id", "required for the https_spiffe profile")
        try:
            endpoint_id = SpiffeId.parse(endpoint_spiffe_id)
        except SpiffeError as err:
            raise RelationshipError("endpoint_spiffe_id", str(err)) from err
    elif endpoint_spiffe_id:
        raise RelationshipError("endpoint_spiffe_id", "only the https_spiffe profile takes an endpoint SPIFFE ID")
    return Relationship(td, check_url(url), prof, endpoint_id, source)


def parse_bootstrap_bundle(trust_domain: TrustDomain, data: bytes) -> SpiffeBundle:
    """An operator-supplied bundle: SPIFFE bundle JSON or PEM CA certificates; InvalidBundleError if neither."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise InvalidBundleError(f"bundle of {trust_domain.name!r}: larger than {MAX_BUNDLE_BYTES} bytes")
    if data.lstrip().startswith(b"-----BEGIN"):
        return SpiffeBundle(trust_domain, X509Bundle.parse_pem(trust_domain, data).authorities)
    bundle = SpiffeBundle.parse(trust_domain, data)
    if not bundle.x509_authorities and not bundle.jwt_authorities:
        raise InvalidBundleError(f"bundle of {trust_domain.name!r}: holds no authority")
    return bundle


def refresh_interval(hint: timedelta | None) -> timedelta:
    """How long to wait before the next fetch: the bundle's hint, bounded; 5 min without one."""
    if hint is None:
        return DEFAULT_REFRESH
    return min(max(hint, MIN_REFRESH), MAX_REFRESH)


def _named_trust_domains(cert: x509.Certificate) -> set[str]:
    """Trust domains named by a CA certificate's spiffe:// URI SANs (X5-05)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    out = set()
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            out.add(SpiffeId.parse(uri).trust_domain.name)
        except SpiffeError:
            continue  # not a SPIFFE ID: an upstream root may carry other URIs
    return out


def check_fetched_bundle(trust_domain: TrustDomain, body: bytes, *, previous: SpiffeBundle | None) -> SpiffeBundle:
    """The bundle in ``body`` if it may replace ``previous`` as ``trust_domain``'s bundle.

    Refused (FetchRefused): a document that does not parse or holds a broken key; a bundle
    with no authority at all (it would silently drop all trust); an X.509 authority whose
    SPIFFE ID names another trust domain (bundles of different trust domains are never mixed,
    FED-05); a ``spiffe_sequence`` lower than the one already held (FED-04).
    """
    try:
        bundle = SpiffeBundle.parse(trust_domain, body)
    except SpiffeError as err:
        raise FetchRefused("invalid_bundle", f"bundle of {trust_domain.name!r} is invalid: {err}") from err
    if not bundle.x509_authorities and not bundle.jwt_authorities:
        raise FetchRefused("invalid_bundle", f"bundle of {trust_domain.name!r} holds no authority")
    for cert in bundle.x509_authorities:
        others = _named_trust_domains(cert) - {trust_domain.name}
        if others:
            raise FetchRefused("wrong_trust_domain", f"bundle fetched for {trust_domain.name!r} holds an authority "
                                                     f"of {sorted(others)[0]!r}")
    if (previous is not None and previous.sequence_number is not None and bundle.sequence_number is not None
            and bundle.sequence_number < previous.sequence_number):
        raise FetchRefused("stale_sequence", f"bundle of {trust_domain.name!r} has sequence {bundle.sequence_number},"
                                             f" older than the held {previous.sequence_number}")
    return bundle


def check_endpoint_id(presented: x509.Certificate, expected: SpiffeId) -> None:
    """The https_spiffe endpoint's leaf must carry exactly the configured SPIFFE ID (FED-21)."""
    try:
        uris = presented.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    try:
        basic = presented.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = basic.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise FetchRefused("wrong_spiffe_id", "bundle endpoint presented a CA certificate, not an X509-SVID")
    if len(uris) != 1:
        raise FetchRefused("wrong_spiffe_id", f"bundle endpoint certificate has {len(uris)} URI SANs, expected one")
    if uris[0] != str(expected):
        raise FetchRefused("wrong_spiffe_id",
                           f"bundle endpoint presented {uris[0][:200]!r}, expected {str(expected)!r}")
