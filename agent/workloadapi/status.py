"""The Workload API's one table from errors to gRPC status, used by every handler method.

An error maps by the first class of its MRO that has a row, so a subclass takes its parent's
status unless it has a row of its own. INTERNAL replies never carry the error's text: it is
logged with its traceback and the caller gets ``internal error``::

    try:
        ...
    except Exception as err:
        raise to_grpc_error(err) from err
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_agent.attest.caller import CallerChangedError, TooManyConnectionsError
from spiffe_agent.errors import (
    AgentConfigError,
    AgentError,
    AgentEvictedError,
    ContainerIdError,
    NodeAttestationError,
    NoIdentityIssuedError,
    NotReadyError,
    ServerUnavailableError,
    WorkloadAttestationError,
)
from spiffe_agent.guard.decision import InvalidSubjectError, PolicyDeniedError, RateLimitedError
from spiffe_agent.manager.cache import TooManyBoundProcessesError
from spiffe_agent.manager.convert import ServerResponseError
from spiffe_agent.manager.storage import StorageError
from spiffe_py._peercred import PeerCredError
from spiffe_py._policy import PolicyError
from spiffe_py.audit import AuditChainError, AuditSecretError, AuditWriteError
from spiffe_py.errors import (
    AuthorizationError,
    BundleNotFoundError,
    InvalidBundleError,
    InvalidEndpointError,
    InvalidSelectorError,
    InvalidSpiffeIdError,
    InvalidSvidError,
    SpiffeError,
    VerificationError,
    WorkloadApiError,
)

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"

WORKLOAD_STATUS: Mapping[type[BaseException], Status] = MappingProxyType({
    # caller identity
    PeerCredError: Status.UNAUTHENTICATED,
    WorkloadAttestationError: Status.UNAUTHENTICATED,
    CallerChangedError: Status.PERMISSION_DENIED,
    ContainerIdError: Status.FAILED_PRECONDITION,
    TooManyConnectionsError: Status.RESOURCE_EXHAUSTED,
    # request values, and the token ValidateJWTSVID is handed (its trust domain unknown to the
    # caller is an invalid token too, not a lookup miss)
    InvalidSpiffeIdError: Status.INVALID_ARGUMENT,
    InvalidSelectorError: Status.INVALID_ARGUMENT,
    InvalidSvidError: Status.INVALID_ARGUMENT,
    InvalidBundleError: Status.INVALID_ARGUMENT,
    InvalidEndpointError: Status.INVALID_ARGUMENT,
    BundleNotFoundError: Status.INVALID_ARGUMENT,
    InvalidSubjectError: Status.INVALID_ARGUMENT,
    AgentConfigError: Status.INVALID_ARGUMENT,
    VerificationError: Status.UNAUTHENTICATED,
    # what the caller may have
    AuthorizationError: Status.PERMISSION_DENIED,
    NoIdentityIssuedError: Status.PERMISSION_DENIED,
    PolicyDeniedError: Status.PERMISSION_DENIED,
    AgentEvictedError: Status.PERMISSION_DENIED,
    RateLimitedError: Status.RESOURCE_EXHAUSTED,
    TooManyBoundProcessesError: Status.RESOURCE_EXHAUSTED,
    PolicyError: Status.FAILED_PRECONDITION,
    # the agent's own state: a retry may succeed
    NotReadyError: Status.UNAVAILABLE,
    ServerUnavailableError: Status.UNAVAILABLE,
    ServerResponseError: Status.UNAVAILABLE,
    NodeAttestationError: Status.UNAVAILABLE,
    # faults of the agent itself: logged, never explained to the caller
    SpiffeError: Status.INTERNAL,
    AgentError: Status.INTERNAL,
    StorageError: Status.INTERNAL,
    WorkloadApiError: Status.INTERNAL,
    AuditSecretError: Status.INTERNAL,
    AuditWriteError: Status.INTERNAL,
    AuditChainError: Status.INTERNAL,
})


def status_for(err: BaseException) -> Status:
    """The status of ``err``: the row of the first class in its MRO that has one, else INTERNAL."""
    for cls in type(err).__mro__:
        status = WORKLOAD_STATUS.get(cls)
        if status is not None:
            return status
    return Status.INTERNAL


def to_grpc_error(err: BaseException) -> GRPCError:
    """The GRPCError a Workload API caller sees for ``err``."""
    if isinstance(err, GRPCError):
        return err
    status = status_for(err)
    if status is Status.INTERNAL:
        log.error("workload api: internal error", exc_info=err)
        return GRPCError(Status.INTERNAL, INTERNAL_MESSAGE)
    return GRPCError(status, str(err))
