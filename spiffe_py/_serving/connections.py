"""Connection exhaustion controls for a TLS gRPC listener: per-peer cap, handshake and idle timeouts.

asyncio's TLS server hands a connection to the application only after its handshake, so a peer
that opens connections and never says hello holds a socket (and, with enough of them, every fd)
for as long as it likes. :class:`GuardedServer` accepts plain TCP instead, counts the connection
against its peer address at once (over the cap: aborted before any TLS work), then runs the
handshake itself (``loop.start_tls``) under a timeout, and closes connections that have had no
open stream and no inbound bytes for ``idle_timeout``::

    raise_fd_limit()                                  # once, at start
    server = GuardedServer([(AgentService(ctx), 4 << 20)], tls=ssl_ctx, connections=ConnectionLimits())
    await server.start(host, port)                    # no ssl= here: the guard does the TLS

Beyond :mod:`spiffe_py._serving.limits`, this relies on grpclib's ``H2Protocol.processor.streams``
(the open streams of a connection); ``tests/unit/serving/test_serving_helpers.py`` pins it.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpclib.config import Configuration

from spiffe_py._serving.limits import BoundedServer

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS_PER_PEER = 128
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 300.0
_NOFILE_CEILING = 1 << 20  # used when the hard limit is "unlimited", which Linux refuses as a soft limit


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:  # e.g. above fs.nr_open: keep what we have
            log.warning("cannot raise the open file limit from %d to %d: %s", soft, target, err)
    return soft, hard


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Caps and timeouts of one TCP listener (seconds for the timeouts)."""

    max_per_peer: int = DEFAULT_MAX_CONNECTIONS_PER_PEER
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_per_peer < 1 or self.handshake_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError(f"connection limits must be positive: {self!r}")


class PeerCounter:
    """Open connections per peer key; pure bookkeeping."""

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._open: dict[str, int] = {}

    def acquire(self, peer: str) -> bool:
        """Count one more connection of ``peer``; False (and nothing counted) when it is at the cap."""
        count = self._open.get(peer, 0)
        if count >= self._cap:
            return False
        self._open[peer] = count + 1
        return True

    def release(self, peer: str) -> None:
        """One connection of ``peer`` ended."""
        count = self._open.get(peer, 0) - 1
        if count > 0:
            self._open[peer] = count
        else:
            self._open.pop(peer, None)

    def count(self, peer: str) -> int:
        """Connections of ``peer`` open now."""
        return self._open.get(peer, 0)


class _Lease:
    """One counted connection; released exactly once."""

    __slots__ = ("_counter", "_peer")

    def __init__(self, counter: PeerCounter, peer: str) -> None:
        self._counter: PeerCounter | None = counter
        self._peer = peer

    def release(self) -> None:
        if self._counter is not None:
            self._counter.release(self._peer)
            self._counter = None


class _Tracked(asyncio.Protocol):
    """The application protocol after the handshake: releases the lease on loss, closes when idle.

    TLS may deliver the first decrypted bytes before ``start_tls`` returned the transport to us:
    those are held until :meth:`connection_made` and then passed on in order.
    """

    def __init__(self, inner: asyncio.Protocol, lease: _Lease, idle_timeout: float) -> None:
        self._inner = inner
        self._lease = lease
        self._idle = idle_timeout
        self._early: list[bytes] = []
        self._transport: asyncio.BaseTransport | None = None
        self.lost = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._transport = transport
        self._last = loop.time()
        self._inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self._inner.data_received(data)
        self._timer = loop.call_later(self._idle, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:
            self._early.append(data)
            return
        self._last = asyncio.get_running_loop().time()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._lease.release()
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._inner.connection_lost(exc)

    def _open_streams(self) -> int:
        processor = getattr(self._inner, "processor", None)
        return len(getattr(processor, "streams", ()))

    def _check_idle(self) -> None:
        if self.lost or self._transport is None:
            return
        loop = asyncio.get_running_loop()
        if self._open_streams():  # a call in progress (e.g. a long-lived stream): not idle
            self._timer = loop.call_later(self._idle, self._check_idle)
            return
        due = self._last + self._idle
        if loop.time() >= due:
            log.debug("closing an idle connection")
            self._transport.close()
            return
        self._timer = loop.call_at(due, self._check_idle)


def _peer_key(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class _Gate(asyncio.Protocol):
    """The TCP protocol of an accepted connection: count it, then hand it to the TLS handshake."""

    def __init__(self, server: GuardedServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = _peer_key(transport)
        if not self._server.peers.acquire(peer):
            log.warning("refusing a connection: %s has %d connections open (the limit)", peer,
                        self._server.connection_limits.max_per_peer)
            transport.abort()
            return
        transport.pause_reading()  # nothing is read before start_tls takes the transport over
        self._server._handshake(transport, _Lease(self._server.peers, peer))

    def data_received(self, data: bytes) -> None:  # reading is paused until start_tls; never called
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # the handshake task sees the loss and releases the lease


class GuardedServer(BoundedServer):
    """A :class:`BoundedServer` for TCP with TLS, guarded by :class:`ConnectionLimits`."""

    def __init__(self, handlers: Sequence[tuple[Any, int]], *, tls: ssl.SSLContext,
                 connections: ConnectionLimits, config: Configuration | None = None) -> None:
        super().__init__(handlers, config=config)
        self._tls = tls
        self.connection_limits = connections
        self.peers = PeerCounter(connections.max_per_peer)
        self._handshakes: set[asyncio.Task[None]] = set()

    def _protocol_factory(self) -> Any:
        return _Gate(self)

    def _application_protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = super()._protocol_factory()
        return protocol

    def _handshake(self, transport: asyncio.Transport, lease: _Lease) -> None:
        task = asyncio.get_running_loop().create_task(self._start_tls(transport, lease))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)

    async def _start_tls(self, transport: asyncio.Transport, lease: _Lease) -> None:
        limits = self.connection_limits
        tracked = _Tracked(self._application_protocol(), lease, limits.idle_timeout)
        try:
            tls_transport = await asyncio.get_running_loop().start_tls(
                transport, tracked, self._tls, server_side=True, ssl_handshake_timeout=limits.handshake_timeout)
        except BaseException as err:  # timeout, bad hello, peer gone, server closing: all end this connection
            lease.release()
            transport.abort()
            if not isinstance(err, Exception):
                raise
            log.debug("tls handshake failed: %s", type(err).__name__)
            return
        if tls_transport is None:  # not expected from start_tls; nothing to serve on
            lease.release()
            transport.abort()
        elif not tracked.lost:  # a peer gone right after the handshake was already released
            tracked.connection_made(tls_transport)

    def close(self) -> None:
        """Stop accepting, cancel pending handshakes and running requests."""
        for task in self._handshakes:
            task.cancel()
        super().close()
