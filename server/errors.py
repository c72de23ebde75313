"""Server-side errors; the API layer maps them to gRPC codes in one table (server/api/errors.py)::

    try:
        result = await attestor.attest(payload, challenge, now=clock.now())
    except AttestationError as err:
        ...  # PERMISSION_DENIED, err.attestor == "join_token"
"""

from __future__ import annotations

from spiffe_py.errors import SpiffeError


class ServerError(SpiffeError):
    """Root of server errors."""


class NotFoundError(ServerError, LookupError):
    """A requested record or authority does not exist."""


class AlreadyExistsError(ServerError):
    """A record with the same identity already exists."""


class FailedPreconditionError(ServerError):
    """The operation is not allowed in the current state (e.g. revoking an untainted authority)."""


class InvalidCsrError(ServerError, ValueError):
    """A certificate signing request is malformed or does not match what was asked for."""


class AttestationError(ServerError):
    """Node attestation failed; ``attestor`` names the plugin."""

    def __init__(self, attestor: str, reason: str) -> None:
        self.attestor = attestor
        self.reason = reason
        super().__init__(f"{attestor}: {reason}")


class CaUnavailableError(ServerError):
    """No active authority can sign right now."""
