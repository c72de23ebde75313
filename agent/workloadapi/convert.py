"""Workload views to Workload API messages (pure).

Every message carries the FULL current state (WA-05); the default identity is
first (WA-29)::

    msg = x509_svid_response(view)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_agent.manager.cache import Entry, JwtToken, WorkloadView
from spiffe_py._proto import workload_pb2
from spiffe_py.bundle import SpiffeBundle


def _der(bundle: SpiffeBundle) -> bytes:
    return b"".join(c.public_bytes(Encoding.DER) for c in bundle.x509_authorities)


def visible_bundles(view: WorkloadView) -> list[SpiffeBundle]:
    """Own bundle first, then the federated bundles the caller's entries federate with."""
    own = [] if view.bundle is None else [view.bundle]
    return own + [view.federated[td] for td in sorted(view.federated, key=lambda td: td.name)]


def x509_svid_response(view: WorkloadView) -> workload_pb2.X509SVIDResponse:
    """All minted X.509-SVIDs of the view, with the own bundle and federated bundles (WA-11..13)."""
    own = b"" if view.bundle is None else _der(view.bundle)
    svids = [
        workload_pb2.X509SVID(
            spiffe_id=str(svid.spiffe_id),
            x509_svid=b"".join(svid.cert_chain),
            x509_svid_key=svid.key_der,
            bundle=own,
            hint=entry.hint,
        )
        for entry, svid in view.svids()
    ]
    federated = {td.id_string(): _der(b) for td, b in view.federated.items()}
    return workload_pb2.X509SVIDResponse(svids=svids, crl=list(view.crls), federated_bundles=federated)


def x509_bundles_response(view: WorkloadView) -> workload_pb2.X509BundlesResponse:
    """X.509 bundles keyed by trust-domain SPIFFE ID (WA-17)."""
    bundles = {b.trust_domain.id_string(): _der(b) for b in visible_bundles(view)}
    return workload_pb2.X509BundlesResponse(crl=list(view.crls), bundles=bundles)


def jwt_bundles_response(view: WorkloadView) -> workload_pb2.JWTBundlesResponse:
    """JWKS documents keyed by trust-domain SPIFFE ID (WA-23)."""
    return workload_pb2.JWTBundlesResponse(
        bundles={b.trust_domain.id_string(): b.jwt_bundle().to_jwks() for b in visible_bundles(view)}
    )


def jwt_svid_response(tokens: Iterable[tuple[Entry, JwtToken]]) -> workload_pb2.JWTSVIDResponse:
    """JWT-SVIDs in identity order (WA-21)."""
    return workload_pb2.JWTSVIDResponse(
        svids=[workload_pb2.JWTSVID(spiffe_id=str(t.spiffe_id), svid=t.token, hint=e.hint) for e, t in tokens]
    )


def audience_list(values: Sequence[str]) -> list[str]:
    """Non-empty audience values, order kept, duplicates dropped."""
    return list(dict.fromkeys(v for v in values if v))
