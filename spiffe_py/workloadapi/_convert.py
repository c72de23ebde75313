"""Workload API responses to domain objects (pure; no gRPC).

Every message is checked per WA-08 (default mandatory fields are errors) and every SVID and
bundle goes through the strict parsers::

    ctx = x509_context_from_proto(resp)
    svid = ctx.default_svid
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py.bundle import BundleSet, JwtBundle, X509Bundle
from spiffe_py.errors import SpiffeError, WorkloadApiError
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import X509Svid

_TD_KEY_PREFIX = "spiffe://"
MAX_HINT_BYTES = 1024  # WA-30


class InvalidResponseError(WorkloadApiError):
    """A Workload API message broke the profile; it is discarded (WA-08)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"workloadapi: invalid response: {reason}", status="UNKNOWN", details=reason)


@dataclass(frozen=True, slots=True)
class X509Context:
    """One full X.509 state from the Workload API: SVIDs (default first, WA-29), bundles, CRLs."""

    svids: tuple[X509Svid, ...]
    bundles: BundleSet
    crls: tuple[x509.CertificateRevocationList, ...] = ()

    @property
    def default_svid(self) -> X509Svid:
        """The default identity: the first SVID (WA-29)."""
        return self.svids[0]


@dataclass(frozen=True, slots=True)
class X509BundlesUpdate:
    """One full X.509 bundle state from FetchX509Bundles (WA-17)."""

    bundles: BundleSet
    crls: tuple[x509.CertificateRevocationList, ...] = ()


def _checked(reason: str, err: SpiffeError | ValueError) -> InvalidResponseError:
    return InvalidResponseError(f"{reason}: {err}")


def _check_hint(hint: str) -> None:
    if len(hint.encode()) > MAX_HINT_BYTES:
        raise InvalidResponseError(f"hint is longer than {MAX_HINT_BYTES} bytes")


def _unique_by_hint(svids: Iterable[pb.X509SVID]) -> list[pb.X509SVID]:
    """Keep the first SVID for each non-empty hint (WA-14)."""
    seen: set[str] = set()
    kept = []
    for svid in svids:
        if svid.hint and svid.hint in seen:
            continue
        seen.add(svid.hint)
        kept.append(svid)
    return kept


def _x509_svid(msg: pb.X509SVID) -> X509Svid:
    for name in ("spiffe_id", "x509_svid", "x509_svid_key", "bundle"):
        if not getattr(msg, name):
            raise InvalidResponseError(f"x509 svid field {name!r} is empty")
    _check_hint(msg.hint)
    try:
        declared = SpiffeId.parse(msg.spiffe_id)
        svid = X509Svid.parse(msg.x509_svid, msg.x509_svid_key, hint=msg.hint)
    except (SpiffeError, ValueError) as err:
        raise _checked("x509 svid does not parse", err) from err
    if svid.spiffe_id != declared:
        raise InvalidResponseError(f"x509 svid spiffe_id {msg.spiffe_id!r} does not match its certificate")
    return svid


def _trust_domain_key(key: str) -> TrustDomain:
    """Bundle map keys are trust domain SPIFFE IDs, ``spiffe://td`` (WA-13, WA-17, WA-23)."""
    if not key.startswith(_TD_KEY_PREFIX):
        raise InvalidResponseError(f"bundle key {key!r} is not a trust domain spiffe id")
    try:
        return TrustDomain.parse_id(key)
    except SpiffeError as err:
        raise _checked("bundle key is invalid", err) from err


def _x509_bundle(td: TrustDomain, der: bytes) -> X509Bundle:
    try:
        return X509Bundle.parse_der(td, der)
    except (SpiffeError, ValueError) as err:
        raise _checked(f"x509 bundle for {td.name!r} does not parse", err) from err


def _x509_bundle_map(entries: Mapping[str, bytes]) -> list[X509Bundle]:
    return [_x509_bundle(_trust_domain_key(key), der) for key, der in sorted(entries.items())]


def _crls(raw: Sequence[bytes]) -> tuple[x509.CertificateRevocationList, ...]:
    try:
        return tuple(x509.load_der_x509_crl(der) for der in raw)
    except ValueError as err:
        raise _checked("crl does not parse", err) from err


def x509_context_from_proto(resp: pb.X509SVIDResponse) -> X509Context:
    """Convert a FetchX509SVID message; the own bundle comes from the default SVID (WA-11..WA-13)."""
    if not resp.svids:
        raise InvalidResponseError("svids is empty")
    messages = _unique_by_hint(resp.svids)
    svids = tuple(_x509_svid(msg) for msg in messages)
    bundles = {bundle.trust_domain: bundle for bundle in _x509_bundle_map(resp.federated_bundles)}
    for msg, svid in zip(messages, svids, strict=True):
        # Each SVID's bundle is its own trust domain's: it wins over a federated entry for that TD.
        bundles[svid.spiffe_id.trust_domain] = _x509_bundle(svid.spiffe_id.trust_domain, msg.bundle)
    return X509Context(svids=svids, bundles=BundleSet.of(*bundles.values()), crls=_crls(resp.crl))


def x509_bundles_from_proto(resp: pb.X509BundlesResponse) -> X509BundlesUpdate:
    """Convert a FetchX509Bundles message (WA-17: at least one bundle)."""
    if not resp.bundles:
        raise InvalidResponseError("bundles is empty")
    return X509BundlesUpdate(bundles=BundleSet.of(*_x509_bundle_map(resp.bundles)), crls=_crls(resp.crl))


def jwt_bundles_from_proto(resp: pb.JWTBundlesResponse) -> BundleSet:
    """Convert a FetchJWTBundles message (WA-23: at least one bundle, values are JWKS)."""
    if not resp.bundles:
        raise InvalidResponseError("bundles is empty")
    bundles = []
    for key, jwks in sorted(resp.bundles.items()):
        td = _trust_domain_key(key)
        try:
            bundles.append(JwtBundle.parse_jwks(td, jwks))
        except (SpiffeError, ValueError) as err:
            raise _checked(f"jwt bundle for {td.name!r} does not parse", err) from err
    return BundleSet.of(*bundles)


def jwt_svids_from_proto(resp: pb.JWTSVIDResponse, audience: Sequence[str], *, now: datetime) -> tuple[JwtSvid, ...]:
    """Convert a FetchJWTSVID response; tokens are parsed without signature check (WA-21)."""
    if not resp.svids:
        raise InvalidResponseError("svids is empty")
    seen: set[str] = set()
    svids = []
    for msg in resp.svids:
        if msg.hint and msg.hint in seen:
            continue
        seen.add(msg.hint)
        svids.append(jwt_svid_from_token(msg.svid, msg.spiffe_id, audience, now=now, hint=msg.hint))
    return tuple(svids)


def jwt_svid_from_token(
    token: str, spiffe_id: str, audience: Sequence[str], *, now: datetime, hint: str = ""
) -> JwtSvid:
    """Parse a JWT-SVID the agent vouched for and check it names ``spiffe_id`` (never logs the token)."""
    if not spiffe_id:
        raise InvalidResponseError("jwt svid field 'spiffe_id' is empty")
    if not token:
        raise InvalidResponseError("jwt svid field 'svid' is empty")
    _check_hint(hint)
    try:
        declared = SpiffeId.parse(spiffe_id)
        svid = JwtSvid.parse_insecure(token, list(audience), now=now)
    except (SpiffeError, ValueError) as err:
        raise _checked("jwt svid does not parse", err) from err
    if svid.spiffe_id != declared:
        raise InvalidResponseError(f"jwt svid spiffe_id {spiffe_id!r} does not match its subject")
    return dataclasses.replace(svid, hint=hint) if hint else svid
