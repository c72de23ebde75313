"""Write coalescing and the per-connection scope (agent/workloadapi/coalesce.py).

The first tests are pure logic over a recording transport. The grpclib tests pin the internals
the adapter relies on (``Server._protocol_factory``, writes going through the transport given to
``connection_made``, ``stream.peer._transport``) with a real server and client on a Unix socket:
if grpclib changes any of them, ``connection_of`` finds no scope or nothing is buffered, and they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.server import Stream

from spiffe_agent.workloadapi.coalesce import (
    CoalescingServer,
    CoalescingTransport,
    connection_of,
    send_stream_message,
    send_unary_response,
)
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIBase, SpiffeWorkloadAPIStub


class RecordingTransport(asyncio.Transport):
    """Records what reaches the real transport (pure logic: no socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closing = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.aborted = self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": "peer"}.get(name, default)


async def _next_iteration() -> None:
    await asyncio.sleep(0)


async def test_writes_of_one_iteration_go_out_as_one_write_in_order() -> None:
    inner = RecordingTransport()
    conn = CoalescingTransport(inner, asyncio.get_running_loop())
    for part in (b"HEADERS", b"", b"DATA", bytearray(b"TRAILERS")):
        conn.write(part)
    assert inner.writes == []  # nothing sent while the writer still runs
    assert conn.get_write_buffer_size() == len(b"HEADERSDATATRAILERS")
    await _next_iteration()
    assert inner.writes == [b"HEADERSDATATRAILERS"]
    conn.write(b"NEXT")  # a later iteration (e.g. the next stream message) is flushed on its own
    await _next_iteration()
    assert inner.writes == [b"HEADERSDATATRAILERS", b"NEXT"]
    assert conn.get_extra_info("peername") == "peer"


async def test_close_flushes_first_and_abort_drops() -> None:
    inner = RecordingTransport()
    conn = CoalescingTransport(inner, asyncio.get_running_loop())
    conn.write(b"GOAWAY")
    conn.close()
    assert inner.writes == [b"GOAWAY"] and inner.closing
    other = RecordingTransport()
    conn2 = CoalescingTransport(other, asyncio.get_running_loop())
    conn2.write(b"LOST")
    conn2.abort()
    await _next_iteration()
    assert other.writes == [] and other.aborted


async def test_nothing_is_written_to_a_closing_transport() -> None:
    inner = RecordingTransport()
    conn = CoalescingTransport(inner, asyncio.get_running_loop())
    conn.write(b"x")
    inner.closing = True
    await _next_iteration()
    assert inner.writes == []


async def test_connection_lost_runs_cleanups_once_and_clears_the_context() -> None:
    conn = CoalescingTransport(RecordingTransport(), asyncio.get_running_loop())
    ran: list[str] = []
    conn.context = "v"
    conn.on_lost(lambda: ran.append("a"))
    conn.on_lost(lambda: (_ for _ in ()).throw(RuntimeError("broken cleanup")))  # must not stop the others
    conn.on_lost(lambda: ran.append("b"))
    conn.connection_lost()
    conn.connection_lost()
    assert ran == ["a", "b"] and conn.context is None
    conn.on_lost(lambda: ran.append("late"))  # registered after the loss: runs at once
    assert ran == ["a", "b", "late"]


class _Probe(SpiffeWorkloadAPIBase):
    """Records, inside a real grpclib handler, what the adapter exposes."""

    def __init__(self) -> None:
        self.scopes: list[CoalescingTransport | None] = []
        self.buffered_after_send: list[int] = []
        self.lost = asyncio.Event()

    async def FetchJWTSVID(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        conn = connection_of(stream)
        self.scopes.append(conn)
        if conn is not None and conn.context is None:
            conn.context = "seen"
            conn.on_lost(self.lost.set)
        await stream.send_message(workload_pb2.JWTSVIDResponse(svids=[workload_pb2.JWTSVID(svid="t")]))
        # HEADERS + DATA went through the adapter and wait for the end of this iteration
        self.buffered_after_send.append(conn.get_write_buffer_size() if conn is not None else 0)

    FetchX509SVID = FetchX509Bundles = FetchJWTBundles = ValidateJWTSVID = FetchWITSVID = FetchWITBundles = (
        FetchJWTSVID
    )


@contextlib.asynccontextmanager
async def _serving(service: SpiffeWorkloadAPIBase, path: Path) -> AsyncIterator[tuple[Channel, SpiffeWorkloadAPIStub]]:
    """``service`` on a CoalescingServer at ``path``, and a client channel to it (closed after)."""
    server = CoalescingServer([service])
    await server.start(path=str(path))
    channel = Channel(path=str(path))
    try:
        yield channel, SpiffeWorkloadAPIStub(channel)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


async def test_grpclib_serves_through_the_adapter_and_gives_one_scope_per_connection(tmp_path: Path) -> None:
    probe = _Probe()
    async with _serving(probe, tmp_path / "s.sock") as (channel, stub):
        for _ in range(3):
            reply = await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest())
            assert reply.svids[0].svid == "t"
        first = probe.scopes[0]
        assert isinstance(first, CoalescingTransport)
        assert all(scope is first for scope in probe.scopes)  # one scope for the connection's three calls
        assert all(size > 0 for size in probe.buffered_after_send)
        channel.close()
        await asyncio.wait_for(probe.lost.wait(), 30)  # the scope's cleanups ran when the client left


class _Helpers(SpiffeWorkloadAPIBase):
    """Uses send_unary_response / send_stream_message and records what stays buffered afterwards."""

    def __init__(self) -> None:
        self.buffered: list[int] = []

    async def FetchJWTSVID(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await send_unary_response(stream, workload_pb2.JWTSVIDResponse(svids=[workload_pb2.JWTSVID(svid="t")]))
        conn = connection_of(stream)
        self.buffered.append(-1 if conn is None else conn.get_write_buffer_size())

    async def FetchX509SVID(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        for i in range(2):
            await send_stream_message(stream, workload_pb2.X509SVIDResponse(crl=[bytes([i])]))
            conn = connection_of(stream)
            self.buffered.append(-1 if conn is None else conn.get_write_buffer_size())

    FetchX509Bundles = FetchJWTBundles = ValidateJWTSVID = FetchWITSVID = FetchWITBundles = FetchJWTSVID


async def test_send_helpers_hand_their_frames_to_the_socket_at_once(tmp_path: Path) -> None:
    """Reply + trailers (unary) and each stream message leave before the handler goes on: nothing stays buffered."""
    helpers = _Helpers()
    async with _serving(helpers, tmp_path / "h.sock") as (_, stub):
        for _ in range(2):
            reply = await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest())
            assert reply.svids[0].svid == "t"  # the call ended OK: the helper's trailers were the only ones
        async with stub.FetchX509SVID.open() as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            assert [(await stream.recv_message()).crl for _ in range(2)] == [[b"\x00"], [b"\x01"]]
        assert helpers.buffered == [0, 0, 0, 0]
