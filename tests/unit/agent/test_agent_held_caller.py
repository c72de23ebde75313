"""The caller captured once per connection at accept (agent.app.CallerAcceptor): what is read once, what per call.

At accept: SO_PEERCRED, a pidfd, the start time, ids and executable. Per call: the held status
fd is re-read and the executable's inode compared (an exec after connecting shows), and the
pidfd is polled. Connections are capped per uid, and idle ones are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from spiffe_agent.app import CallerAcceptor
from spiffe_agent.attest.base import CallerAttestor
from spiffe_agent.attest.caller import (
    SO_PEERPIDFD,
    Caller,
    CallerChangedError,
    ConnectionLimit,
    TooManyConnectionsError,
    capture,
)
from spiffe_agent.attest.procfs import (
    LinuxProcFs,
    ProcessKey,
    _pread_all,
    boot_ticks,
    parse_stat_start_time,
    parse_status,
)
from spiffe_agent.attest.unix import UnixAttestor
from spiffe_agent.errors import WorkloadAttestationError
from spiffe_agent.workloadapi.coalesce import CoalescingServer, CoalescingTransport
from spiffe_agent.workloadapi.handler import connection_caller, to_grpc_error
from spiffe_py._peercred import peer_cred_from_socket
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIBase, SpiffeWorkloadAPIStub
from tests.unit.agent.test_agent_unix_attestor import FakeUsers

CHILD = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sys.stdin.readline()
os.setgid(65534)
os.setuid(65534)
print("changed", flush=True)
sys.stdin.readline()
"""


@contextlib.asynccontextmanager
async def accepted_child(tmp_path: Path) -> AsyncIterator[tuple[asyncio.subprocess.Process, socket.socket]]:
    """A child process connected to a listening socket here, and our accepted end of that connection."""
    path = str(tmp_path / "l.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, path, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    try:
        conn, _ = await asyncio.get_running_loop().sock_accept(listener)
        with conn:
            yield proc, conn
    finally:
        listener.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_real_setuid_after_accept_is_refused_and_a_reaped_caller_has_exited(tmp_path: Path) -> None:
    async with accepted_child(tmp_path) as (proc, conn):
        procfs = LinuxProcFs()
        caller = capture(conn, procfs, accepted_at=boot_ticks())
        try:
            assert caller.process == ProcessKey(proc.pid, parse_stat_start_time(procfs.stat(proc.pid)))
            assert caller.identity.ids == parse_status(procfs.status(proc.pid))
            caller.check()  # unchanged
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"\n")
            assert await proc.stdout.readline() == b"changed\n"
            with pytest.raises(CallerChangedError, match="changed its uid, gid or groups"):
                caller.check()
            proc.stdin.write(b"\n")
            await proc.wait()  # reaped
            assert caller.exited()
            with pytest.raises(WorkloadAttestationError, match="has exited"):
                caller.check()
        finally:
            caller.close()
    caller.close()  # idempotent
    assert caller.exited()


def test_pread_all_reads_past_one_chunk(tmp_path: Path) -> None:
    """A status over 64 KiB (thousands of groups) is read whole, not cut at the first chunk."""
    big = "Name:\tx\nUid:\t1\t2\t2\t2\nGid:\t3\t4\t4\t4\nGroups:\t" + " ".join(map(str, range(20000))) + "\n"
    path = tmp_path / "status"
    path.write_text(big)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert len(big) > 64 * 1024
        assert _pread_all(fd) == big
        assert parse_status(_pread_all(fd)).groups[-1] == 19999  # again from offset 0
    finally:
        os.close(fd)


class CountingAcceptor(CallerAcceptor):
    def __init__(self, per_uid: int = 64) -> None:
        super().__init__(LinuxProcFs(), ConnectionLimit(per_uid))
        self.callers: list[Caller | Exception] = []

    def __call__(self, conn: CoalescingTransport) -> Any:
        result = super().__call__(conn)
        self.callers.append(result)
        return result


class _Attesting(SpiffeWorkloadAPIBase):
    """The handler's order: the connection's caller, attested."""

    def __init__(self) -> None:
        procfs = LinuxProcFs()
        self._attestor = CallerAttestor([UnixAttestor(procfs, FakeUsers())])
        self.keys: list[ProcessKey] = []

    async def FetchJWTSVID(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        try:
            caller = connection_caller(stream)
            self.keys.append(caller.process)
            selectors = await self._attestor.attest(caller)
        except Exception as err:
            raise to_grpc_error(err) from err
        await stream.send_message(workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=",".join(sorted(map(str, selectors))))]))

    async def FetchX509SVID(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        await asyncio.sleep(30)  # an open stream, as a workload waiting for rotations holds

    FetchX509Bundles = FetchJWTBundles = ValidateJWTSVID = FetchWITSVID = FetchWITBundles = FetchJWTSVID


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, acceptor: CountingAcceptor, idle_timeout: float | None = None,
                  ) -> AsyncIterator[tuple[str, _Attesting]]:
    service = _Attesting()
    server = CoalescingServer([service], accept=acceptor, idle_timeout=idle_timeout)
    path = str(tmp_path / "s.sock")
    await server.start(path=path)
    try:
        yield path, service
    finally:
        server.close()
        await server.wait_closed()


async def _released(callers: list[Caller | Exception]) -> None:
    while not all(c.exited() for c in callers if isinstance(c, Caller)):
        await asyncio.sleep(0.01)


async def test_the_caller_is_captured_once_per_connection_and_released_on_close(tmp_path: Path) -> None:
    acceptor = CountingAcceptor()
    async with serving(tmp_path, acceptor) as (path, service):
        for _ in range(2):  # two connections, two calls each
            channel = Channel(path=path)
            stub = SpiffeWorkloadAPIStub(channel)
            for _ in range(2):
                reply = await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest())
                assert f"unix:uid:{os.geteuid()}" in reply.svids[0].spiffe_id
            channel.close()
        await asyncio.wait_for(_released(acceptor.callers), 30)  # each caller ends when its connection is lost
    assert len(acceptor.callers) == 2 and all(isinstance(c, Caller) for c in acceptor.callers)
    own = ProcessKey(os.getpid(), parse_stat_start_time(LinuxProcFs().stat(os.getpid())))
    assert service.keys == [own] * 4


def test_a_stream_without_a_captured_caller_is_refused() -> None:
    """A stream not served by CoalescingServer (or before any accept hook) has no caller to attest."""

    class NoScope:
        peer = None

    with pytest.raises(WorkloadAttestationError, match="no caller was captured"):
        connection_caller(NoScope())


async def test_connections_over_the_per_uid_cap_are_refused_with_resource_exhausted(tmp_path: Path) -> None:
    acceptor = CountingAcceptor(per_uid=2)
    async with serving(tmp_path, acceptor) as (path, _):
        channels = [Channel(path=path) for _ in range(4)]
        outcomes = []
        for channel in channels:
            for _ in range(2):  # the refusal holds for every call on the connection
                try:
                    await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(workload_pb2.JWTSVIDRequest())
                    outcomes.append("OK")
                except GRPCError as err:
                    assert err.status is Status.RESOURCE_EXHAUSTED
                    outcomes.append(err.message)
        over = f"too many connections for uid {os.geteuid()} (max 2)"
        assert outcomes == ["OK", "OK", "OK", "OK", over, over, over, over]
        assert [type(c) for c in acceptor.callers] == [Caller, Caller, TooManyConnectionsError, TooManyConnectionsError]
        channels[0].close()  # one of the admitted connections ends: its place is free again
        await asyncio.wait_for(_released(acceptor.callers[:1]), 30)
        channel = Channel(path=path)
        await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(workload_pb2.JWTSVIDRequest())
        for c in [*channels, channel]:
            c.close()


def test_connection_limit_counts_per_uid() -> None:
    limit = ConnectionLimit(1)
    limit.admit(1000)
    limit.admit(0)  # another uid has its own budget
    with pytest.raises(TooManyConnectionsError, match="too many connections for uid 1000"):
        limit.admit(1000)
    limit.release(1000)
    limit.admit(1000)


async def test_idle_connections_are_closed_but_open_streams_are_kept(tmp_path: Path) -> None:
    acceptor = CountingAcceptor()
    async with serving(tmp_path, acceptor, idle_timeout=0.2) as (path, _):
        idle, streaming = Channel(path=path), Channel(path=path)
        await SpiffeWorkloadAPIStub(idle).FetchJWTSVID(workload_pb2.JWTSVIDRequest())
        async with SpiffeWorkloadAPIStub(streaming).FetchX509SVID.open() as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            await asyncio.wait_for(_released(acceptor.callers[:1]), 5)  # the idle connection was closed
            await asyncio.sleep(0.6)  # several idle periods
            second = acceptor.callers[1]
            assert isinstance(second, Caller) and not second.exited()  # the open stream's connection stays
            await stream.cancel()
        idle.close()
        streaming.close()


class _NoPeerPidfd:
    """A socket as on a kernel without SO_PEERPIDFD: capture falls back to pidfd_open."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.family = sock.family

    def getsockopt(self, level: int, name: int, size: int = 0) -> bytes:
        if name == SO_PEERPIDFD:
            raise OSError(errno.ENOPROTOOPT, "no SO_PEERPIDFD")
        return self._sock.getsockopt(level, name, size)


async def _spawn_with_pid(pid: int) -> asyncio.subprocess.Process | None:
    """A `sleep` that got ``pid`` (through ns_last_pid), or None if another process took it first."""
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    if proc.pid == pid:
        return proc
    proc.kill()
    await proc.wait()
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="writing ns_last_pid needs root")
async def test_without_peer_pidfd_a_pid_reused_after_the_accept_is_refused_by_its_start_time(tmp_path: Path) -> None:
    """The connecting process exits after the accept; a newer process takes its pid before pidfd_open."""
    for _ in range(10):  # other processes on the box may take the pid first
        async with accepted_child(tmp_path) as (proc, conn):
            accepted_at = boot_ticks()
            cred = peer_cred_from_socket(conn)
            proc.kill()
            await proc.wait()
            await asyncio.sleep(0.05)  # a few clock ticks: the new process starts visibly later
            reused = await _spawn_with_pid(cred.pid)
            if reused is None:
                (tmp_path / "l.sock").unlink()
                continue
            try:
                with pytest.raises(WorkloadAttestationError, match="started after it connected"):
                    capture(_NoPeerPidfd(conn), LinuxProcFs(), accepted_at=accepted_at)  # type: ignore[arg-type]
            finally:
                reused.kill()
                await reused.wait()
            return
    pytest.fail("could not get the connecting process's pid reused")
