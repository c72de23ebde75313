"""spiffe_py: SPIFFE IDs, SVIDs, bundles, the Workload API client and mTLS helpers."""

from __future__ import annotations

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

__all__ = [
    "AuthorizationError",
    "BundleNotFoundError",
    "InvalidBundleError",
    "InvalidEndpointError",
    "InvalidJwtSvidError",
    "InvalidSelectorError",
    "InvalidSpiffeIdError",
    "InvalidSvidError",
    "InvalidTrustDomainError",
    "InvalidX509SvidError",
    "JwtSvidExpiredError",
    "NoIdentityError",
    "RevokedError",
    "SpiffeError",
    "VerificationError",
    "WorkloadApiError",
]
