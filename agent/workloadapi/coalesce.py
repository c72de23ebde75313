"""Write coalescing for the Workload API server: one ``send()`` per loop iteration and connection.

grpclib writes every HTTP/2 frame batch to the transport at once: a unary response is three
``transport.write`` calls (HEADERS, DATA, trailers), each a ``send()`` syscall that wakes the
client, which then competes with the agent for the CPU before the rest is out. Here the writes
of one event-loop iteration are buffered and flushed together by a ``call_soon`` callback, i.e.
as soon as the code that wrote them yields. The agent's handlers send through
:func:`send_unary_response` (reply and trailers) and :func:`send_stream_message`, which flush at
once: a unary response leaves in one ``send()`` without waiting for the next iteration::

    server = CoalescingServer([handler])      # a grpclib Server; everything else is unchanged
    await server.start(path=socket_path)
    await send_unary_response(stream, reply)  # a unary handler's last step: reply + trailers, sent at once

The wrapper also gives each connection an accept hook, whose result lives exactly as long as
the connection (the agent captures its :class:`~agent.attest.caller.Caller` there), and closes
connections that have had no open call for ``idle_timeout`` seconds::

    server = CoalescingServer([handler], accept=lambda conn: capture(conn), idle_timeout=300.0)
    conn = connection_of(stream)              # inside a handler; None on a plain grpclib Server
    conn.context                              # what accept returned for this connection
    conn.on_lost(callback)                    # runs once, when the connection is lost

This is the ONE module of the agent that relies on grpclib internals: ``Server._protocol_factory``
(a no-argument method returning the connection's ``asyncio.Protocol``), the protocol writing
only through the transport it got in ``connection_made``, ``stream.peer._transport`` being
that transport (as ``spiffe_py._peercred`` also relies on), and the protocol's
``connection._connection`` being its h2 connection (open streams, for the idle timeout).
``tests/unit/agent/test_agent_coalesce.py`` pins both against the installed grpclib.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from spiffe_py._serving.limits import WORKLOAD_API_MESSAGE_LIMIT, BoundedServer

log = logging.getLogger(__name__)


class CoalescingTransport:
    """Wraps an asyncio write transport: writes made in one loop iteration go out as one write."""

    __slots__ = ("_inner", "_loop", "_lost", "_pending", "_scheduled", "context")

    def __init__(self, inner: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._inner = inner
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False
        self.context: Any = None  # what the server's accept hook returned for this connection
        self._lost: list[Callable[[], None]] | None = []  # None once the connection was lost

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the connection is lost (at once if it already was)."""
        if self._lost is None:
            callback()
        else:
            self._lost.append(callback)

    def connection_lost(self) -> None:
        """Drop what is buffered and run the :meth:`on_lost` callbacks (once)."""
        callbacks, self._lost = self._lost or [], None
        self._pending.clear()
        self.context = None
        for callback in callbacks:
            try:
                callback()
            except Exception:  # one failing cleanup must not skip the others
                log.exception("connection cleanup failed")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data``; the first write of an iteration schedules the flush."""
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def writelines(self, chunks: Any) -> None:
        """Buffer several chunks (same as repeated :meth:`write`)."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand everything buffered to the real transport now (in order, as one write)."""
        self._scheduled = False
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._inner.is_closing():  # a lost connection: nothing can be sent any more
            self._inner.write(data)

    def close(self) -> None:
        """Flush, then close (the real transport still sends what it buffered)."""
        self.flush()
        self._inner.close()

    def abort(self) -> None:
        """Drop what is buffered and abort the connection."""
        self._pending.clear()
        self._inner.abort()

    def is_closing(self) -> bool:
        """Whether the real transport is closing."""
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The real transport's extra info (``socket`` for SO_PEERCRED, ``peername``, ...)."""
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        """Bytes buffered here and in the real transport."""
        return sum(map(len, self._pending)) + self._inner.get_write_buffer_size()

    def __getattr__(self, name: str) -> Any:
        # anything else (pause_reading, set_write_buffer_limits, ...) is the real transport's
        return getattr(self._inner, name)


Accept = Callable[[CoalescingTransport], object]


class _CoalescingProtocol(asyncio.Protocol):
    """Delegates to grpclib's protocol, handing it a :class:`CoalescingTransport`."""

    __slots__ = ("_accept", "_idle", "_seen", "_timer", "inner", "transport")

    def __init__(self, inner: asyncio.Protocol, accept: Accept | None = None,
                 idle_timeout: float | None = None) -> None:
        self.inner = inner
        self.transport: CoalescingTransport | None = None
        self._accept = accept
        self._idle = idle_timeout
        self._seen = False  # bytes arrived since the last idle check
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        loop = asyncio.get_running_loop()
        self.transport = CoalescingTransport(transport, loop)
        if self._accept is not None:  # before grpclib sees a byte of the connection
            self.transport.context = self._accept(self.transport)
        if self._idle is not None:
            self._timer = loop.call_later(self._idle, self._check_idle)
        self.inner.connection_made(self.transport)  # type: ignore[arg-type]  # duck-typed like a Transport

    def _check_idle(self) -> None:
        assert self.transport is not None and self._idle is not None
        if self._seen or _open_streams(self.inner):
            self._seen = False
            self._timer = asyncio.get_running_loop().call_later(self._idle, self._check_idle)
            return
        self._timer = None
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._seen = True
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        try:
            self.inner.connection_lost(exc)
        finally:
            if self.transport is not None:
                self.transport.connection_lost()


def _open_streams(protocol: asyncio.Protocol) -> int:
    """Streams open on grpclib's connection; unknown (another grpclib) counts as busy, never idle."""
    h2 = getattr(getattr(protocol, "connection", None), "_connection", None)
    count = getattr(h2, "open_inbound_streams", 1)
    return count if isinstance(count, int) else 1


class CoalescingServer(BoundedServer):
    """A grpclib :class:`~grpclib.server.Server` whose connections coalesce their writes.

    ``accept(conn)`` runs for each new connection; its result is ``conn.context``. With
    ``idle_timeout`` a connection with no open stream and no bytes received for that long is closed.
    Requests larger than ``max_message_bytes`` are refused on their length prefix
    (:class:`~spiffe_py._serving.limits.BoundedServer`).
    """

    def __init__(self, handlers: Sequence[Any], *, accept: Accept | None = None, idle_timeout: float | None = None,
                 max_message_bytes: int = WORKLOAD_API_MESSAGE_LIMIT) -> None:
        super().__init__([(handler, max_message_bytes) for handler in handlers])
        self._accept = accept
        self._idle_timeout = idle_timeout

    def _protocol_factory(self) -> Any:
        return _CoalescingProtocol(super()._protocol_factory(), self._accept, self._idle_timeout)


def connection_of(stream: Any) -> CoalescingTransport | None:
    """The connection scope of a grpclib server stream, or None if it is not served by :class:`CoalescingServer`."""
    transport = getattr(stream.peer, "_transport", None)
    return transport if isinstance(transport, CoalescingTransport) else None


async def send_unary_response(stream: Any, message: Any) -> None:
    """Send a unary call's response and its trailers, and hand them to the socket now.

    grpclib would send the trailers itself once the handler returns, and the buffered writes would
    leave one loop iteration later; ending the call here sends all three frames in one ``send()``
    without that extra iteration.
    """
    await stream.send_message(message)
    await stream.send_trailing_metadata()
    flush(stream)


async def send_stream_message(stream: Any, message: Any) -> None:
    """Send one message of a server stream and hand it (with the headers before it) to the socket now."""
    await stream.send_message(message)
    flush(stream)


def flush(stream: Any) -> None:
    """Write what the stream's connection has buffered now (nothing to do on a plain grpclib Server)."""
    conn = connection_of(stream)
    if conn is not None:
        conn.flush()
