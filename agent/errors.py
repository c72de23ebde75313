"""Agent-side errors, extending :mod:`spiffe_py.errors`.

The Workload API maps them to gRPC codes in one table (agent/workloadapi/status.py)::

    raise WorkloadAttestationError("attest: caller exited during attestation")
"""

from __future__ import annotations

from spiffe_py.errors import SpiffeError


class AgentError(SpiffeError):
    """Root of the agent's own errors."""


class WorkloadAttestationError(AgentError):
    """The caller could not be attested (all attestors failed, or the caller changed/exited)."""


class ContainerIdError(AgentError):
    """The cgroup file named conflicting container IDs."""


class NotReadyError(AgentError):
    """The agent has not completed its first sync with the server."""


class ServerUnavailableError(AgentError):
    """The server could not be reached or refused a call."""


class AgentConfigError(AgentError, ValueError):
    """The agent configuration is invalid."""


class AgentEvictedError(AgentError):
    """The server no longer accepts this agent (evicted or banned); it must attest again."""


class NoIdentityIssuedError(AgentError):
    """The caller matches no registration entry (or not the requested one)."""


class NodeAttestationError(AgentError):
    """The agent could not attest its node (bad evidence, or the server's challenge could not be answered)."""
