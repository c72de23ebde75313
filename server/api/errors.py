"""The one table that turns domain errors into gRPC statuses.

Every handler body runs inside :func:`grpc_errors`::

    async def GetEntry(self, stream):
        with grpc_errors("GetEntry"):
            ...

A :class:`SpiffeError` becomes ``GRPCError(Status[err.grpc_status], str(err))``;
anything else becomes ``INTERNAL`` with a generic message and a logged traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from server.metrics import RPCS
from spiffe_py.errors import SpiffeError

log = logging.getLogger("spiffe_server.api")

INTERNAL_MESSAGE = "internal error"


class RequestError(SpiffeError, ValueError):
    """A request field is invalid; the message names the field."""

    grpc_status = "INVALID_ARGUMENT"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


async def recv_request(stream: Stream[Any, Any]) -> Any:
    """The one request message of a unary call; a missing one is ``INVALID_ARGUMENT`` ("request: missing")."""
    request = await stream.recv_message()
    if request is None:
        raise RequestError("request", "missing")
    return request


def status_for(err: SpiffeError) -> Status:
    """The gRPC status for a domain error (unknown hint names map to INTERNAL)."""
    try:
        return Status[err.grpc_status]
    except KeyError:
        return Status.INTERNAL


def to_grpc_error(err: BaseException, method: str) -> GRPCError:
    """Map any exception raised by a handler to the GRPCError the caller sees."""
    if isinstance(err, GRPCError):
        return err
    if isinstance(err, TimeoutError):  # a client that stalls mid-handshake (e.g. a challenge never answered)
        return GRPCError(Status.DEADLINE_EXCEEDED, "timed out waiting for the client")
    if isinstance(err, SpiffeError):
        status = status_for(err)
        if status is Status.INTERNAL:
            log.error("internal error in %s", method, exc_info=err)
            return GRPCError(Status.INTERNAL, INTERNAL_MESSAGE)
        return GRPCError(status, str(err))
    log.error("internal error in %s", method, exc_info=err)
    return GRPCError(Status.INTERNAL, INTERNAL_MESSAGE)


@contextlib.contextmanager
def grpc_errors(method: str) -> Iterator[None]:
    """Re-raise whatever the block raises as the mapped GRPCError; count the call by status."""
    try:
        yield
    except GRPCError as err:
        RPCS.labels(method=method, code=err.status.name).inc()
        raise
    except Exception as err:  # the mapping boundary: nothing may escape unmapped
        mapped = to_grpc_error(err, method)
        RPCS.labels(method=method, code=mapped.status.name).inc()
        raise mapped from err
    RPCS.labels(method=method, code="OK").inc()
