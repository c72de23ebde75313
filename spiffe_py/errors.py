"""Error hierarchy of spiffe-py.

Every rejection of untrusted input raises a subclass of :class:`SpiffeError`.
Parse errors are also :class:`ValueError`, lookups also :class:`LookupError`.
They carry no gRPC status; each API maps them in its own table. Catch them by class::

    try:
        SpiffeId.parse(text)
    except InvalidSpiffeIdError as err:
        print(err.reason)
"""

from __future__ import annotations


class SpiffeError(Exception):
    """Root of all spiffe-py errors."""


class InvalidSpiffeIdError(SpiffeError, ValueError):
    """A SPIFFE ID (or a part of one) broke the SPIFFE-ID rules."""

    def __init__(self, reason: str, value: str | None = None) -> None:
        self.reason = reason
        self.value = value
        super().__init__(f"spiffeid: {reason}" + ("" if value is None else f": {value!r}"))


class InvalidTrustDomainError(InvalidSpiffeIdError):
    """A trust domain name broke the SPIFFE-ID rules."""


class InvalidSelectorError(SpiffeError, ValueError):
    """A selector was not of the form ``type:value``."""


class InvalidSvidError(SpiffeError, ValueError):
    """An SVID broke its profile."""


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


class BundleNotFoundError(SpiffeError, LookupError):
    """No bundle is known for the trust domain."""

    def __init__(self, message: str, trust_domain: str | None = None) -> None:
        self.trust_domain = trust_domain
        super().__init__(message)


class VerificationError(SpiffeError):
    """A signature, chain or validity check failed."""


class RevokedError(VerificationError):
    """A certificate is listed in a CRL from its issuer."""


class AuthorizationError(SpiffeError):
    """An authenticated peer is not allowed."""


class InvalidEndpointError(SpiffeError, ValueError):
    """A Workload API endpoint address broke SPIFFE_Workload_Endpoint §4."""


class WorkloadApiError(SpiffeError):
    """The Workload API answered with an error status."""

    def __init__(self, message: str, status: str = "UNKNOWN", details: str = "") -> None:
        self.status = status
        self.details = details
        super().__init__(message)


class NoIdentityError(WorkloadApiError):
    """The agent has no identity for the caller (PERMISSION_DENIED)."""
