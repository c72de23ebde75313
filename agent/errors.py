"""Agent-side errors, extending :mod:`spiffe_py.errors`.

``grpc_status`` hints how the Workload API handler maps them::

    raise WorkloadAttestationError("attest: caller exited during attestation")
"""

from __future__ import annotations

from spiffe_py.errors import SpiffeError


class AgentError(SpiffeError):
    """Root of the agent's own errors."""


class WorkloadAttestationError(AgentError):
    """The caller could not be attested (all attestors failed, or the caller changed/exited)."""

    grpc_status = "UNAUTHENTICATED"


class ContainerIdError(AgentError):
    """The cgroup file named conflicting container IDs."""

    grpc_status = "FAILED_PRECONDITION"


class NotReadyError(AgentError):
    """The agent has not completed its first sync with the server."""

    grpc_status = "UNAVAILABLE"


class ServerUnavailableError(AgentError):
    """The server could not be reached or refused a call."""

    grpc_status = "UNAVAILABLE"


class AgentConfigError(AgentError, ValueError):
    """The agent configuration is invalid."""

    grpc_status = "INVALID_ARGUMENT"


class AgentEvictedError(AgentError):
    """The server no longer accepts this agent (evicted or banned); it must attest again."""

    grpc_status = "PERMISSION_DENIED"


class NoIdentityIssuedError(AgentError):
    """The caller matches no registration entry (or not the requested one)."""

    grpc_status = "PERMISSION_DENIED"


class NodeAttestationError(AgentError):
    """The agent could not attest its node (bad evidence, or the server's challenge could not be answered)."""

    grpc_status = "UNAVAILABLE"
