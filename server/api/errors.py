"""The server's one table from errors to gRPC status, shared by the agent API and the admin API.

Both APIs map every error the same way, so they share one table. An error maps by the first
class of its MRO that has a row, so a subclass takes its parent's status unless it has a row of
its own. Every handler body runs inside :func:`grpc_errors`::

    async def GetEntry(self, stream):
        with grpc_errors("GetEntry"):
            ...

INTERNAL replies never carry the error's text: it is logged with its traceback and the caller
gets ``internal error``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from time import perf_counter
from types import MappingProxyType
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

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
from spiffe_server import errors as srv
from spiffe_server.audit import ForwardError
from spiffe_server.config import ConfigError
from spiffe_server.datastore import errors as ds
from spiffe_server.datastore.schema import UniqueViolation
from spiffe_server.federation.relationship import FetchRefused, RelationshipError
from spiffe_server.metrics import LONG_LIVED_RPCS, RPC_LATENCY, RPCS
from spiffe_server.ratelimit import RateLimitedError
from spiffe_server.revocation import RevocationRequestError

log = logging.getLogger("spiffe_server.api")

INTERNAL_MESSAGE = "internal error"
TIMEOUT_MESSAGE = "timed out waiting for the client"


class RequestError(SpiffeError, ValueError):
    """A request field is invalid; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


SERVER_STATUS: Mapping[type[BaseException], Status] = MappingProxyType({
    # request values
    RequestError: Status.INVALID_ARGUMENT,
    InvalidSpiffeIdError: Status.INVALID_ARGUMENT,
    InvalidSelectorError: Status.INVALID_ARGUMENT,
    InvalidSvidError: Status.INVALID_ARGUMENT,
    InvalidBundleError: Status.INVALID_ARGUMENT,
    InvalidEndpointError: Status.INVALID_ARGUMENT,
    srv.InvalidCsrError: Status.INVALID_ARGUMENT,
    ds.InvalidArgumentError: Status.INVALID_ARGUMENT,
    RevocationRequestError: Status.INVALID_ARGUMENT,
    ConfigError: Status.INVALID_ARGUMENT,
    RelationshipError: Status.INVALID_ARGUMENT,
    # who the caller is and what it may do
    VerificationError: Status.UNAUTHENTICATED,
    PeerCredError: Status.UNAUTHENTICATED,
    AuthorizationError: Status.PERMISSION_DENIED,
    srv.AttestationError: Status.PERMISSION_DENIED,
    RateLimitedError: Status.RESOURCE_EXHAUSTED,
    ds.LimitExceededError: Status.RESOURCE_EXHAUSTED,
    # records
    BundleNotFoundError: Status.NOT_FOUND,
    srv.NotFoundError: Status.NOT_FOUND,
    ds.NotFoundError: Status.NOT_FOUND,
    srv.AlreadyExistsError: Status.ALREADY_EXISTS,
    ds.AlreadyExistsError: Status.ALREADY_EXISTS,
    ds.ConflictError: Status.ABORTED,
    # state
    srv.FailedPreconditionError: Status.FAILED_PRECONDITION,
    ForwardError: Status.FAILED_PRECONDITION,
    FetchRefused: Status.FAILED_PRECONDITION,  # a bundle endpoint refresh failed; the last good bundle stays
    PolicyError: Status.FAILED_PRECONDITION,
    srv.CaUnavailableError: Status.UNAVAILABLE,
    TimeoutError: Status.DEADLINE_EXCEEDED,  # a client that stalls mid-handshake (a challenge never answered)
    # faults of the server itself: logged, never explained to the caller
    SpiffeError: Status.INTERNAL,
    srv.ServerError: Status.INTERNAL,
    ds.DataStoreError: Status.INTERNAL,
    ds.SchemaVersionError: Status.INTERNAL,
    UniqueViolation: Status.INTERNAL,
    WorkloadApiError: Status.INTERNAL,
    AuditSecretError: Status.INTERNAL,
    AuditWriteError: Status.INTERNAL,
    AuditChainError: Status.INTERNAL,
})


async def recv_request(stream: Stream[Any, Any]) -> Any:
    """The one request message of a unary call; a missing one is ``INVALID_ARGUMENT`` ("request: missing")."""
    request = await stream.recv_message()
    if request is None:
        raise RequestError("request", "missing")
    return request


def status_for(err: BaseException) -> Status:
    """The status of ``err``: the row of the first class in its MRO that has one, else INTERNAL."""
    for cls in type(err).__mro__:
        status = SERVER_STATUS.get(cls)
        if status is not None:
            return status
    return Status.INTERNAL


def to_grpc_error(err: BaseException, method: str) -> GRPCError:
    """Map any exception raised by a handler to the GRPCError the caller sees."""
    if isinstance(err, GRPCError):
        return err
    status = status_for(err)
    if status is Status.INTERNAL:
        log.error("internal error in %s", method, exc_info=err)
        return GRPCError(Status.INTERNAL, INTERNAL_MESSAGE)
    if not isinstance(err, SpiffeError):  # only domain errors' texts are written for the caller
        return GRPCError(status, TIMEOUT_MESSAGE if isinstance(err, TimeoutError) else status.name.lower())
    return GRPCError(status, str(err))


@contextlib.contextmanager
def grpc_errors(method: str) -> Iterator[None]:
    """Re-raise whatever the block raises as the mapped GRPCError; count and time the call by status."""
    started, code = perf_counter(), "OK"
    try:
        yield
    except GRPCError as err:
        code = err.status.name
        raise
    except Exception as err:  # the mapping boundary: nothing may escape unmapped
        mapped = to_grpc_error(err, method)
        code = mapped.status.name
        raise mapped from err
    finally:
        RPCS.labels(method=method, code=code).inc()
        if method not in LONG_LIVED_RPCS:
            RPC_LATENCY.labels(method=method, code=code).observe(perf_counter() - started)
