"""Error hierarchy of spiffe-py.

Every rejection of untrusted input raises a subclass of :class:`SpiffeError`.
Parse errors are also :class:`ValueError`, lookups also :class:`LookupError`.
``grpc_status`` is a hint for API layers that map errors to gRPC codes::

    try:
        SpiffeId.parse(text)
    except InvalidSpiffeIdError as err:
        print(err.reason)
"""

from __future__ import annotations


class SpiffeError(Exception):
    """Root of all spiffe-py errors."""

    grpc_status: str = "INTERNAL"


class InvalidSpiffeIdError(SpiffeError, ValueError):
    """A SPIFFE ID (or a part of one) broke the SPIFFE-ID rules."""

    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, reason: str, value: str | None = None) -> None:
        self.reason = reason
        self.value = value
        super().__init__(f"spiffeid: {reason}" + ("" if value is None else f": {value!r}"))


class InvalidTrustDomainError(InvalidSpiffeIdError):
    """A trust domain name broke the SPIFFE-ID rules."""


class InvalidSelectorError(SpiffeError, ValueError):
    """A selector was not of the form ``type:value``."""

    grpc_status = "INVALID_ARGUMENT"


class InvalidSvidError(SpiffeError, ValueError):
    """An SVID broke its profile."""

    grpc_status = "INVALID_ARGUMENT"


class InvalidX509SvidError(InvalidSvidError):
    """An X.509-SVID broke the X509-SVID profile."""


class InvalidJwtSvidError(InvalidSvidError):
    """A JWT-SVID broke the JWT-SVID profile or failed validation."""

    def __init__(self, message: str, claim: str | None = None) -> None:
        self.claim = claim
        super().__init__(message)


class JwtSvidExpiredError(InvalidJwtSvidError):
    """A JWT-SVID is past its ``exp`` (plus leeway)."""


class InvalidBundleError(SpiffeError, ValueError):
    """A trust bundle could not be parsed."""

    grpc_status = "INVALID_ARGUMENT"


class BundleNotFoundError(SpiffeError, LookupError):
    """No bundle is known for the trust domain."""

    grpc_status = "NOT_FOUND"

    def __init__(self, message: str, trust_domain: str | None = None) -> None:
        self.trust_domain = trust_domain
        super().__init__(message)


class VerificationError(SpiffeError):
    """A signature, chain or validity check failed."""

    grpc_status = "UNAUTHENTICATED"


class RevokedError(VerificationError):
    """A certificate is listed in a CRL from its issuer."""


class AuthorizationError(SpiffeError):
    """An authenticated peer is not allowed."""

    grpc_status = "PERMISSION_DENIED"


class InvalidEndpointError(SpiffeError, ValueError):
    """A Workload API endpoint address broke SPIFFE_Workload_Endpoint §4."""

    grpc_status = "INVALID_ARGUMENT"


class WorkloadApiError(SpiffeError):
    """The Workload API answered with an error status."""

    def __init__(self, message: str, status: str = "UNKNOWN", details: str = "") -> None:
        self.status = status
        self.details = details
        super().__init__(message)


class NoIdentityError(WorkloadApiError):
    """The agent has no identity for the caller (PERMISSION_DENIED)."""
