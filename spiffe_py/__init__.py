"""spiffe_py: SPIFFE IDs, SVIDs, bundles, the Workload API client and mTLS helpers."""

from __future__ import annotations

from spiffe_py.bundle import BundleSet, JwtBundle, SpiffeBundle, X509Bundle
from spiffe_py.errors import (
    AuthorizationError,
    BundleNotFoundError,
    InvalidBundleError,
    InvalidEndpointError,
    InvalidJwtSvidError,
    InvalidSelectorError,
    InvalidSpiffeIdError,
    InvalidSvidError,
    InvalidTrustDomainError,
    InvalidX509SvidError,
    JwtSvidExpiredError,
    NoIdentityError,
    RevokedError,
    SpiffeError,
    VerificationError,
    WorkloadApiError,
)
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_py.x509svid import X509Svid, verify_x509_svid

__all__ = [
    "AuthorizationError",
    "BundleNotFoundError",
    "BundleSet",
    "InvalidBundleError",
    "InvalidEndpointError",
    "InvalidJwtSvidError",
    "InvalidSelectorError",
    "InvalidSpiffeIdError",
    "InvalidSvidError",
    "InvalidTrustDomainError",
    "InvalidX509SvidError",
    "JwtBundle",
    "JwtSvid",
    "JwtSvidExpiredError",
    "NoIdentityError",
    "RevokedError",
    "SpiffeBundle",
    "SpiffeError",
    "SpiffeId",
    "TrustDomain",
    "VerificationError",
    "WorkloadApiError",
    "X509Bundle",
    "X509Svid",
    "verify_x509_svid",
]
