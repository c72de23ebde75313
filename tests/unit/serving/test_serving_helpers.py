"""spiffe_py._serving: message limits, connection guard, repeated-log filter.

The grpclib tests run a real server and client over real sockets in-process; they pin the
grpclib internals the helpers rely on (``Server._protocol_factory``, ``Handler.accept`` getting
the stream whose ``recv_data`` the message reader calls, ``H2Protocol.processor.streams``): if
grpclib changes them, an oversized request gets through or an idle connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIBase, SpiffeWorkloadAPIStub
from spiffe_py._serving.connections import ConnectionLimits, GuardedServer, PeerCounter, raise_fd_limit
from spiffe_py._serving.limits import BoundedServer, ByteBudget, check_message_limit, window_config
from spiffe_py._serving.logs import RepeatFilter
from tests.support.ca import CA

HEADER = {"workload.spiffe.io": "true"}


class _Echo(SpiffeWorkloadAPIBase):
    """Answers ValidateJWTSVID with the size of the token it received."""

    def __init__(self) -> None:
        self.received: list[int] = []

    async def ValidateJWTSVID(self, stream: Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        self.received.append(len(request.svid))
        await stream.send_message(workload_pb2.ValidateJWTSVIDResponse(spiffe_id=str(len(request.svid))))

    async def _unused(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED)

    FetchX509SVID = FetchX509Bundles = FetchJWTBundles = FetchJWTSVID = FetchWITSVID = FetchWITBundles = _unused


@contextlib.asynccontextmanager
async def _unix(server: BoundedServer, path: Path) -> AsyncIterator[SpiffeWorkloadAPIStub]:
    await server.start(path=str(path))
    channel = Channel(path=str(path))
    try:
        yield SpiffeWorkloadAPIStub(channel)
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


async def test_request_over_the_limit_is_refused_and_the_handler_never_sees_it(tmp_path: Path) -> None:
    echo = _Echo()
    async with _unix(BoundedServer([(echo, 1024)]), tmp_path / "s.sock") as stub:
        ok = await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="x" * 900), metadata=HEADER)
        assert ok.spiffe_id == "900"
        with pytest.raises(GRPCError) as exc:
            await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="x" * 2000), metadata=HEADER)
    assert exc.value.status is Status.RESOURCE_EXHAUSTED
    assert exc.value.message == "message of 2003 bytes exceeds the limit of 1024 bytes"
    assert echo.received == [900]


async def test_the_connection_is_closed_after_a_refusal(tmp_path: Path) -> None:
    """A peer that sent an oversized message loses the connection (after it got the status)."""
    server = BoundedServer([(_Echo(), 1024)])
    await server.start(path=str(tmp_path / "s.sock"))
    channel = Channel(path=str(tmp_path / "s.sock"))
    try:
        stub = SpiffeWorkloadAPIStub(channel)
        await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="x"), metadata=HEADER)
        protocol = channel._protocol
        assert protocol is not None and not protocol.handler.connection_lost
        with pytest.raises(GRPCError):
            await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="x" * 5000), metadata=HEADER)
        for _ in range(40):
            if protocol.handler.connection_lost:
                break
            await asyncio.sleep(0.1)
        assert protocol.handler.connection_lost
    finally:
        channel.close()
        server.close()
        await server.wait_closed()


async def test_concurrent_requests_within_the_connection_budget_all_succeed(tmp_path: Path) -> None:
    """Bodies beyond the connection's budget wait for it instead of failing."""
    echo = _Echo()
    async with _unix(BoundedServer([(echo, 1024)]), tmp_path / "s.sock") as stub:
        replies = await asyncio.gather(*(
            stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="x" * 1000), metadata=HEADER)
            for _ in range(8)))
    assert [r.spiffe_id for r in replies] == ["1000"] * 8


async def test_byte_budget_makes_a_read_wait_until_bytes_are_released() -> None:
    budget = ByteBudget(100)
    await budget.reserve(60)
    waiting = asyncio.ensure_future(budget.reserve(60))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    budget.release(60)
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(budget.reserve(40), 1)


async def test_each_service_gets_its_own_limit() -> None:
    class Other(_Echo):
        def __mapping__(self) -> dict[str, Any]:
            return {"/other.Service/Call": None}

    server = BoundedServer([(_Echo(), 2048), (Other(), 4096)])
    assert server.limits["/SpiffeWorkloadAPI/ValidateJWTSVID"] == 2048
    assert server.limits["/other.Service/Call"] == 4096


@pytest.mark.parametrize("limit", [0, 1023, 64 * 1024 * 1024 + 1, True, 2.5])
def test_message_limits_out_of_range_are_refused(limit: Any) -> None:
    with pytest.raises(ValueError, match="must be an integer from 1024 to 67108864"):
        check_message_limit(limit, "x")


def test_flow_control_window_follows_the_limit() -> None:
    assert window_config(64 * 1024).http2_stream_window_size == 65536
    assert window_config(1024).http2_connection_window_size == 65535  # the HTTP/2 minimum
    assert window_config(64 * 1024 * 1024).http2_stream_window_size == 4 * 1024 * 1024


def test_peer_counter_caps_each_peer_and_forgets_closed_ones() -> None:
    peers = PeerCounter(2)
    assert peers.acquire("a") and peers.acquire("a") and not peers.acquire("a")
    assert peers.acquire("b")
    peers.release("a")
    assert peers.acquire("a") and peers.count("a") == 2
    peers.release("a")
    peers.release("a")
    assert peers.count("a") == 0


def test_fd_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        now, _ = raise_fd_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
        assert now == (hard if hard != resource.RLIM_INFINITY else 1 << 20)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- the guarded TLS listener ------------------------------------------------------------------


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = CA.create("example.org", now=datetime.now(UTC))
    svid = ca.issue_svid("spiffe://example.org/spire/server")
    (tmp_path / "chain.pem").write_bytes(svid.chain_pem())
    (tmp_path / "key.pem").write_bytes(svid.key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "chain.pem", tmp_path / "key.pem")
    server_ctx.set_alpn_protocols(["h2"])
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.set_alpn_protocols(["h2"])
    return server_ctx, client_ctx


@contextlib.asynccontextmanager
async def _guarded(tmp_path: Path,
                   limits: ConnectionLimits) -> AsyncIterator[tuple[GuardedServer, int, ssl.SSLContext]]:
    server_ctx, client_ctx = _tls_contexts(tmp_path)
    server = GuardedServer([(_Echo(), 1024)], tls=server_ctx, connections=limits)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    await server.start("127.0.0.1", port)
    try:
        yield server, port, client_ctx
    finally:
        server.close()
        await server.wait_closed()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the server ends the connection within ``within`` seconds (what it sends is dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    try:
        while (left := deadline - loop.time()) > 0:
            if await asyncio.wait_for(reader.read(65536), left) == b"":
                return True
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError):
        return True
    return False


async def test_guarded_server_serves_grpc_over_tls_and_refuses_oversized(tmp_path: Path) -> None:
    async with _guarded(tmp_path, ConnectionLimits()) as (server, port, client_ctx):
        channel = Channel("127.0.0.1", port, ssl=client_ctx)
        try:
            stub = SpiffeWorkloadAPIStub(channel)
            ok = await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="abc"), metadata=HEADER)
            assert ok.spiffe_id == "3"
            assert server.peers.count("127.0.0.1") == 1
            with pytest.raises(GRPCError) as exc:
                await stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(svid="x" * 4000), metadata=HEADER)
            assert exc.value.status is Status.RESOURCE_EXHAUSTED
        finally:
            channel.close()
        for _ in range(40):  # the lease is released when the connection goes
            if server.peers.count("127.0.0.1") == 0:
                break
            await asyncio.sleep(0.05)
        assert server.peers.count("127.0.0.1") == 0


async def test_a_peer_that_never_says_hello_is_cut_off_at_the_handshake_timeout(tmp_path: Path) -> None:
    async with _guarded(tmp_path, ConnectionLimits(handshake_timeout=0.5)) as (server, port, _):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await _closed_by_server(reader, 5.0)
        finally:
            writer.close()
        assert server.peers.count("127.0.0.1") == 0


async def test_connections_over_the_per_peer_cap_are_closed_at_once(tmp_path: Path) -> None:
    async with _guarded(tmp_path, ConnectionLimits(max_per_peer=2, handshake_timeout=30)) as (server, port, _):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await _closed_by_server(reader, 2.0)
            assert not await _closed_by_server(held[0][0], 0.3)  # within the cap: still pending
            assert server.peers.count("127.0.0.1") == 2
        finally:
            writer.close()
            for _, w in held:
                w.close()


async def test_an_idle_tls_connection_is_closed(tmp_path: Path) -> None:
    async with _guarded(tmp_path, ConnectionLimits(idle_timeout=0.5)) as (server, port, client_ctx):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="x")
        try:
            assert server.peers.count("127.0.0.1") == 1
            assert await _closed_by_server(reader, 5.0)
        finally:
            writer.close()


# -- repeated log lines ------------------------------------------------------------------------


def _record(msg: str, created: float, *, level: int = logging.ERROR, exc: BaseException | None = None,
            args: tuple[Any, ...] = ()) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    record = logging.LogRecord("asyncio", level, __file__, 1, msg, args, exc_info)
    record.created = created
    return record


def test_a_flood_of_one_error_logs_one_line_per_interval_with_the_dropped_count() -> None:
    flt = RepeatFilter(interval=10.0)
    err = OSError(24, "Too many open files")
    passed = [flt.filter(_record("socket.accept() out of system resource\nsocket: <fd=%d>", 1000.0 + i / 1000,
                                 exc=err, args=(i,)))
              for i in range(5000)]
    assert passed.count(True) == 1 and passed[0]
    later = _record("socket.accept() out of system resource\nsocket: <fd=%d>", 1011.0, exc=err, args=(7,))
    assert flt.filter(later)
    assert "[4999 similar messages suppressed]" in later.getMessage()


def test_different_errors_and_info_records_are_not_collapsed() -> None:
    flt = RepeatFilter(interval=10.0)
    assert flt.filter(_record("a", 1.0))
    assert flt.filter(_record("b", 1.0))
    assert flt.filter(_record("a", 1.0, exc=ValueError("x")))  # another exception type: its own group
    assert not flt.filter(_record("a", 2.0))
    assert all(flt.filter(_record("a", 2.0, level=logging.INFO)) for _ in range(3))


def test_server_logging_collapses_a_flood_of_one_error(capsys: pytest.CaptureFixture[str]) -> None:
    """What the server's configure_logging installs: 500 identical EMFILE errors write one line."""
    from spiffe_server.logging import configure_logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging(level="info", fmt="text")
        for fd in range(500):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logging.getLogger("asyncio").exception("socket.accept() out of system resource\nsocket: <fd=%d>", fd)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    err = capsys.readouterr().err
    assert err.count("socket.accept() out of system resource") == 1
    assert len(err) < 2000
