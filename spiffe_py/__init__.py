"""spiffe_py: SPIFFE IDs, SVIDs, bundles, the Workload API client and mTLS helpers.

The public names load on first use (PEP 562), so that importing a submodule such as the
generated protobuf code does not pull in ``cryptography``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

_MODULE_OF = {
    **dict.fromkeys(("BundleSet", "JwtBundle", "SpiffeBundle", "X509Bundle"), "spiffe_py.bundle"),
    **dict.fromkeys((
        "AuthorizationError", "BundleNotFoundError", "InvalidBundleError", "InvalidEndpointError",
        "InvalidJwtSvidError", "InvalidSelectorError", "InvalidSpiffeIdError", "InvalidSvidError",
        "InvalidTrustDomainError", "InvalidX509SvidError", "JwtSvidExpiredError", "NoIdentityError",
        "RevokedError", "SpiffeError", "VerificationError", "WorkloadApiError"), "spiffe_py.errors"),
    "JwtSvid": "spiffe_py.jwtsvid",
    "SpiffeId": "spiffe_py.spiffeid",
    "TrustDomain": "spiffe_py.spiffeid",
    "X509Svid": "spiffe_py.x509svid",
    "verify_x509_svid": "spiffe_py.x509svid",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'spiffe_py' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})


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
