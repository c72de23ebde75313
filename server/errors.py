"""Server-side errors; the API layer maps ``grpc_status`` to a gRPC code in one table::

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

    grpc_status = "NOT_FOUND"


class AlreadyExistsError(ServerError):
    """A record with the same identity already exists."""

    grpc_status = "ALREADY_EXISTS"


class FailedPreconditionError(ServerError):
    """The operation is not allowed in the current state (e.g. revoking an untainted authority)."""

    grpc_status = "FAILED_PRECONDITION"


class InvalidCsrError(ServerError, ValueError):
    """A certificate signing request is malformed or does not match what was asked for."""

    grpc_status = "INVALID_ARGUMENT"


class AttestationError(ServerError):
    """Node attestation failed; ``attestor`` names the plugin."""

    grpc_status = "PERMISSION_DENIED"

    def __init__(self, attestor: str, reason: str) -> None:
        self.attestor = attestor
        self.reason = reason
        super().__init__(f"{attestor}: {reason}")


class CaUnavailableError(ServerError):
    """No active authority can sign right now."""

    grpc_status = "UNAVAILABLE"
