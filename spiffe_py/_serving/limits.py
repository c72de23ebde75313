"""gRPC message size limits checked on the 5-byte length prefix, before the body is buffered.

grpclib reads a message as ``recv_data(5)`` (flag + length) and then ``recv_data(length)``,
acknowledging HTTP/2 flow control for every chunk it pulls in, so a peer that announces
600 MiB gets to push all 600 MiB into memory before any codec sees it. Here the body read is
refused when the announced length is over the method's limit: the call ends with
RESOURCE_EXHAUSTED naming the limit, and the connection is closed a second later (time for the
status to reach the peer). What a peer can make the process hold per stream is the limit plus
one HTTP/2 window (data received but not yet read is bounded by the window we advertise,
which :func:`window_config` keeps near the limit). Per connection, the message bodies being
read at once are held to :data:`CONNECTION_BUDGET_MESSAGES` times the largest limit: further
reads wait (their data stays unacknowledged, so flow control holds the peer back) rather than
fail::

    server = BoundedServer([(AgentService(ctx), 4 << 20), (AdminService(ctx), 4 << 20)])
    await server.start(host, port, ssl=tls)

This module relies on grpclib internals: ``Server._protocol_factory``, ``Server.__dispatch__``,
``grpclib.server.Handler.accept(stream, headers, release_stream)`` getting the HTTP/2 stream
whose ``recv_data`` the message reader calls, and that stream's ``connection``
(``grpclib.protocol.Connection``) and ``_h2_connection``. ``tests/unit/serving/test_serving_helpers.py``
pins them against the installed grpclib.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from grpclib.config import Configuration
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Handler, Server
from h2.errors import ErrorCodes

log = logging.getLogger(__name__)

GRPC_PREFIX_BYTES = 5  # compressed flag (1) + big-endian message length (4)
MIN_MESSAGE_LIMIT = 1024
MAX_MESSAGE_LIMIT = 64 * 1024 * 1024  # a configured limit above this is refused as a mistake
WORKLOAD_API_MESSAGE_LIMIT = 64 * 1024
SERVER_API_MESSAGE_LIMIT = 4 * 1024 * 1024
# HTTP/2 allows windows from 64 KiB - 1; grpclib's default (and our ceiling) is 4 MiB
_MIN_WINDOW = 65535
_MAX_WINDOW = 4 * 1024 * 1024
REFUSED_CLOSE_DELAY = 1.0  # seconds between the RESOURCE_EXHAUSTED status and closing the connection
CONNECTION_BUDGET_MESSAGES = 2  # largest messages one connection may have in flight at once


def check_message_limit(limit: int, what: str) -> int:
    """``limit`` if it is a sane message size limit, else ValueError naming ``what``."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not MIN_MESSAGE_LIMIT <= limit <= MAX_MESSAGE_LIMIT:
        raise ValueError(f"{what}: must be an integer from {MIN_MESSAGE_LIMIT} to {MAX_MESSAGE_LIMIT}, got {limit!r}")
    return limit


def window_config(limit: int) -> Configuration:
    """grpclib server settings whose inbound HTTP/2 windows are about ``limit`` (64 KiB .. 4 MiB)."""
    window = min(max(limit, _MIN_WINDOW), _MAX_WINDOW)
    return Configuration(http2_connection_window_size=window, http2_stream_window_size=window)


def refusal(size: int, limit: int) -> GRPCError:
    """The error for a message announced as ``size`` bytes over a ``limit``."""
    return GRPCError(Status.RESOURCE_EXHAUSTED, f"message of {size} bytes exceeds the limit of {limit} bytes")


class ByteBudget:
    """Bytes a connection may be reading at once; :meth:`reserve` waits until they are free."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._released = asyncio.Event()

    async def reserve(self, size: int) -> None:
        """Take ``size`` bytes (at most the capacity), waiting for other reads to finish first."""
        while self._free < size:
            self._released.clear()
            await self._released.wait()
        self._free -= size

    def release(self, size: int) -> None:
        """Give back what :meth:`reserve` took."""
        self._free += size
        self._released.set()


def bound_stream(stream: Any, limit: int, budget: ByteBudget, on_refused: Callable[[], None]) -> None:
    """Make every read of ``stream`` (a ``grpclib.protocol.Stream``) larger than ``limit`` fail.

    grpclib's only reads are the 5-byte prefix and the body of the announced length, so a read over
    the limit is a body the peer announced too large: it raises :func:`refusal` before a byte of it
    is pulled in (or acknowledged), and calls ``on_refused``. Reads within the limit first take
    their size from the connection's ``budget``.
    """
    recv_data: Callable[[int], Awaitable[bytes]] = stream.recv_data

    async def bounded(size: int) -> bytes:
        if size > limit:
            on_refused()
            raise refusal(size, limit)
        await budget.reserve(size)
        try:
            return await recv_data(size)
        finally:
            budget.release(size)

    stream.recv_data = bounded


def close_soon(stream: Any, delay: float = REFUSED_CLOSE_DELAY) -> None:
    """GOAWAY and close ``stream``'s connection after ``delay`` seconds (once the status went out)."""
    connection = stream.connection
    h2_connection = stream._h2_connection

    def close() -> None:
        if connection.is_closing():
            return
        try:
            h2_connection.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            connection.flush()
        except Exception:  # the h2 state machine may already be closed; closing the socket is what matters
            log.debug("no goaway before closing a connection", exc_info=True)
        connection.close()

    asyncio.get_running_loop().call_later(delay, close)


async def _unimplemented(stream: Any, release_stream: Callable[[], Any]) -> None:
    """UNIMPLEMENTED for an unknown method path. grpclib's own answer has no content-type, which gRPC
    clients report as UNKNOWN ("Missing content-type header") instead of the real status."""
    try:
        await stream.send_headers([(":status", "200"), ("content-type", "application/grpc"),
                                   ("grpc-status", str(Status.UNIMPLEMENTED.value)),
                                   ("grpc-message", "Method not found")], end_stream=True)
        if stream.closable:
            stream.reset_nowait()
    finally:
        release_stream()


class _BoundedHandler(Handler):  # type: ignore[misc]  # grpclib ships no stubs
    """grpclib's per-connection request handler, bounding each stream by its method's limit."""

    def __init__(self, limits: Mapping[str, int], default: int, *args: Any) -> None:
        super().__init__(*args)
        self._limits = limits
        self._default = default
        self._budget = ByteBudget(CONNECTION_BUDGET_MESSAGES * max(limits.values(), default=default))

    def accept(self, stream: Any, headers: Sequence[tuple[str, str]], release_stream: Callable[[], Any]) -> None:
        path = next((value for name, value in headers if name == ":path"), "")
        if path not in self.mapping:
            self.__gc_step__()
            self._tasks[stream] = self.loop.create_task(_unimplemented(stream, release_stream))
            return
        bound_stream(stream, self._limits.get(path, self._default), self._budget, lambda: close_soon(stream))
        super().accept(stream, headers, release_stream)


LISTEN_BACKLOG = 4096
"""The listen() backlog (the kernel caps it at net.core.somaxconn). grpclib's default of 100 is too
small for a burst of local workloads: a connect() to a Unix socket whose backlog is full fails at once
(EAGAIN) instead of waiting, so those workloads would see a dropped connection."""


class BoundedServer(Server):  # type: ignore[misc]  # grpclib ships no stubs
    """A grpclib :class:`~grpclib.server.Server` that refuses oversized requests on their length prefix.

    ``handlers`` pairs each service with the largest request message (bytes) its methods accept.
    """

    def __init__(self, handlers: Sequence[tuple[Any, int]], *, config: Configuration | None = None) -> None:
        if not handlers:
            raise ValueError("BoundedServer: no handlers")
        limits: dict[str, int] = {}
        for handler, limit in handlers:
            check_message_limit(limit, "message limit")
            limits.update(dict.fromkeys(handler.__mapping__(), limit))
        self._limits = limits
        self._default_limit = min(limit for _, limit in handlers)  # unknown methods are refused anyway
        super().__init__([handler for handler, _ in handlers],
                         config=config or window_config(max(limit for _, limit in handlers)))

    @property
    def limits(self) -> Mapping[str, int]:
        """The request message limit (bytes) of each method path."""
        return self._limits

    async def start(self, *args: Any, backlog: int = LISTEN_BACKLOG, **kwargs: Any) -> None:
        await super().start(*args, backlog=backlog, **kwargs)

    def _protocol_factory(self) -> H2Protocol:
        # grpclib's own factory with the bounded handler in place of grpclib.server.Handler
        self.__gc_step__()
        handler = _BoundedHandler(self._limits, self._default_limit, self._mapping, self._codec,
                                  self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)
        return H2Protocol(handler, self._config, self._h2_config)
