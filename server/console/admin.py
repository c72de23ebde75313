"""The console's only way to read or change server state: the admin service's own handlers.

Each call goes through :class:`~spiffe_server.api.admin_service.AdminService` with a
:class:`~spiffe_server.api.local_call.LocalCall`, so the console inherits the admin API's
authorization (admin SVID checks, the ``admin_readonly`` role), validation, error table and audit::

    admin = AdminCaller(AdminService(ctx))
    entry = await admin.call(principal, "CreateEntry", admin_pb2.CreateEntryRequest(entry=...))
"""

from __future__ import annotations

from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_server.api.admin_service import AdminService
from spiffe_server.api.local_call import LocalCall, Principal

# gRPC status of an admin call -> the HTTP status the console answers with
HTTP_STATUS: dict[Status, int] = {
    Status.INVALID_ARGUMENT: 400,
    Status.OUT_OF_RANGE: 400,
    Status.UNAUTHENTICATED: 401,
    Status.PERMISSION_DENIED: 403,
    Status.NOT_FOUND: 404,
    Status.ALREADY_EXISTS: 409,
    Status.FAILED_PRECONDITION: 409,
    Status.ABORTED: 409,
    Status.RESOURCE_EXHAUSTED: 429,
    Status.UNAVAILABLE: 503,
}


class AdminCallError(Exception):
    """An admin call refused: the HTTP status and the admin API's own message (never a secret)."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message


class AdminCaller:
    """Calls admin handlers in-process on behalf of a console principal."""

    def __init__(self, service: AdminService) -> None:
        self._service = service

    async def call(self, principal: Principal, method: str, request: Any) -> Any:
        """The handler's reply; :class:`AdminCallError` when it refused."""
        handler = getattr(self._service, method)
        stream = LocalCall(principal, method, request)
        try:
            await handler(stream)
        except GRPCError as err:
            raise AdminCallError(HTTP_STATUS.get(err.status, 500), err.message or err.status.name) from None
        return stream.response
