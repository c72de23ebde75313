"""The caller held per connection (CallerAttestor.hold, app.ConnectionCallers): what is read once, what per call.

Per call the ids are still read (a setuid execve changes them on the same connection) and the
held pidfd is polled after attestation; the start time is read once, when the connection's first
call holds the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.server import Stream

from agent.app import ConnectionCallers
from agent.attest.caller import CallerAttestor, HeldProcess
from agent.attest.procfs import LinuxProcFs, _pread_all, parse_status
from agent.attest.unix import UnixAttestor
from agent.errors import WorkloadAttestationError
from agent.manager.process_binding import ProcessKey
from agent.workloadapi.coalesce import CoalescingServer, CoalescingTransport
from spiffe_py._peercred import PeerCred
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIBase, SpiffeWorkloadAPIStub
from spiffe_py.selectors import Selector
from tests.unit.agent.test_agent_coalesce import RecordingTransport
from tests.unit.agent.test_agent_unix_attestor import STATUS, CountingProcFs, FakeUsers, KillingAttestor

CRED = PeerCred(pid=os.getpid(), uid=1001, gid=2001)


def _caller(procfs: CountingProcFs, *, recheck_ids: bool = False) -> CallerAttestor:
    return CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())], recheck_ids=recheck_ids)


@contextlib.contextmanager
def _holding(procfs: CountingProcFs, *, recheck_ids: bool = False) -> Iterator[tuple[CallerAttestor, HeldProcess]]:
    """A caller over ``procfs`` and its hold of CRED's process, released afterwards."""
    caller = _caller(procfs, recheck_ids=recheck_ids)
    held = caller.hold(CRED.pid)
    try:
        yield caller, held
    finally:
        held.close()


async def test_held_caller_reads_start_time_once_and_only_status_per_call() -> None:
    procfs = CountingProcFs()
    with _holding(procfs) as (caller, held):
        assert (held.pid, held.start_time) == (CRED.pid, 987654)
        assert procfs.reads == ["stat"]
        for _ in range(3):
            facts = caller.pin(CRED, held)
            assert facts is not None and facts.start_time == 987654
            assert Selector("unix", "user:alice") in await caller.attest(CRED)
        assert procfs.reads == ["stat", "status", "status", "status"]  # no stat re-check per call


async def test_held_caller_still_sees_an_id_change_between_calls() -> None:
    """A setuid execve on the same connection: the next call's status read shows the new euid."""
    procfs = CountingProcFs()
    with _holding(procfs) as (caller, held):
        caller.pin(CRED, held)
        assert Selector("unix", "uid:1001") in await caller.attest(CRED)
        procfs.statuses = [STATUS.replace("Uid:\t1000\t1001", "Uid:\t1000\t0")]
        caller.pin(CRED, held)
        with pytest.raises(WorkloadAttestationError, match="no longer runs as the connecting uid"):
            await caller.attest(CRED)


async def test_held_caller_rechecks_ids_after_attestation_when_configured() -> None:
    procfs = CountingProcFs()
    with _holding(procfs, recheck_ids=True) as (caller, held):
        procfs.statuses = [STATUS, STATUS.replace("Uid:\t1000\t1001", "Uid:\t1000\t0")]  # pin, then re-check
        caller.pin(CRED, held)
        with pytest.raises(WorkloadAttestationError, match="changed during attestation"):
            await caller.attest(CRED)


async def test_released_hold_fails_the_call() -> None:
    procfs = CountingProcFs()
    caller = _caller(procfs)
    held = caller.hold(CRED.pid)
    caller.pin(CRED, held)
    held.close()  # the connection was lost while the call was in flight
    held.close()  # idempotent
    assert held.exited()
    with pytest.raises(WorkloadAttestationError, match="has exited"):
        await caller.attest(CRED)


async def _sleeper() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")


async def test_real_held_process_exiting_during_attestation_is_rejected() -> None:
    proc = await _sleeper()
    procfs = LinuxProcFs()
    caller = CallerAttestor(procfs, [KillingAttestor(proc)], recheck_ids=False)  # the poll alone must catch it
    cred = PeerCred(pid=proc.pid, uid=os.geteuid(), gid=os.getegid())
    held = caller.hold(proc.pid)
    try:
        assert caller.pin(cred, held) is not None
        with pytest.raises(WorkloadAttestationError, match="exited during attestation"):
            await caller.attest(cred)
    finally:
        held.close()


async def test_held_caller_reaped_and_its_pid_free_fails_every_later_call() -> None:
    """Once the held process is gone, a call fails even if its pid could belong to someone else by now."""
    proc = await _sleeper()
    procfs = LinuxProcFs()
    caller = CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())])
    cred = PeerCred(pid=proc.pid, uid=os.geteuid(), gid=os.getegid())
    held = caller.hold(proc.pid)
    try:
        caller.pin(cred, held)
        assert Selector("unix", f"uid:{os.geteuid()}") in await caller.attest(cred)
        proc.kill()
        await proc.wait()  # reaped: the pid is free for reuse
        assert held.exited()
        for _ in range(2):
            caller.pin(cred, held)  # whatever /proc/<pid> shows now (nothing, or another process)
            with pytest.raises(WorkloadAttestationError, match="exited"):
                await caller.attest(cred)
    finally:
        held.close()


async def test_held_status_file_follows_a_real_setuid_and_fails_once_reaped() -> None:
    """The per-connection status fd is re-read from offset 0: a uid change shows; a reaped process reads ESRCH."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c",
        "import os, sys; sys.stdin.readline(); os.setgid(65534); os.setuid(65534); sys.stdin.readline()",
        stdin=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    procfs = LinuxProcFs()
    held = CallerAttestor(procfs, []).hold(proc.pid)
    try:
        assert parse_status(held.status()).euid == os.geteuid()
        proc.stdin.write(b"\n")
        await proc.stdin.drain()
        for _ in range(500):  # the child setuids at its own pace
            if parse_status(held.status()).euid == 65534:
                break
            await asyncio.sleep(0.01)
        assert parse_status(held.status()) == parse_status(procfs.status(proc.pid))
        assert parse_status(held.status()).euid == 65534
        proc.stdin.write(b"\n")
        await proc.stdin.drain()
        await proc.wait()  # reaped
        with pytest.raises(OSError):
            held.status()
        assert held.exited()
    finally:
        held.close()
    held.close()  # idempotent
    with pytest.raises(OSError):
        held.status()


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


async def test_hold_of_a_gone_process_fails() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    with pytest.raises(WorkloadAttestationError, match="is gone"):
        CallerAttestor(LinuxProcFs(), []).hold(proc.pid)


async def _released(held: list[HeldProcess]) -> None:
    while not all(h.exited() for h in held):
        await asyncio.sleep(0.01)


class CountingHolds(CallerAttestor):
    def __init__(self) -> None:
        procfs = LinuxProcFs()
        super().__init__(procfs, [UnixAttestor(procfs, FakeUsers())], recheck_ids=False)
        self.held: list[HeldProcess] = []

    def hold(self, pid: int) -> HeldProcess:
        held = super().hold(pid)
        self.held.append(held)
        return held


class _Attesting(SpiffeWorkloadAPIBase):
    """The handler's order: credentials, process key, attestation."""

    def __init__(self, callers: ConnectionCallers, caller: CallerAttestor) -> None:
        self._callers = callers
        self._caller = caller
        self.keys: list[ProcessKey | None] = []

    async def FetchJWTSVID(self, stream: Stream[Any, Any]) -> None:
        await stream.recv_message()
        try:
            cred = self._callers.credentials(stream)
            self.keys.append(self._callers.process_of(cred))
            selectors = await self._caller.attest(cred)
        except WorkloadAttestationError as err:
            raise GRPCError(Status.UNAUTHENTICATED, str(err)) from err
        await stream.send_message(workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=",".join(sorted(map(str, selectors))))]))

    FetchX509SVID = FetchX509Bundles = FetchJWTBundles = ValidateJWTSVID = FetchWITSVID = FetchWITBundles = (
        FetchJWTSVID
    )


async def test_connection_callers_hold_once_per_connection_and_release_on_close(tmp_path: Path) -> None:
    caller = CountingHolds()
    service = _Attesting(ConnectionCallers(caller), caller)
    server = CoalescingServer([service])
    path = str(tmp_path / "s.sock")
    await server.start(path=path)
    try:
        for _ in range(2):  # two connections, two calls each
            channel = Channel(path=path)
            stub = SpiffeWorkloadAPIStub(channel)
            for _ in range(2):
                reply = await stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest())
                assert f"unix:uid:{os.geteuid()}" in reply.svids[0].spiffe_id
            channel.close()
        await asyncio.wait_for(_released(caller.held), 30)  # each hold ends when its connection is lost
    finally:
        server.close()
        await server.wait_closed()
    assert len(caller.held) == 2
    own = ProcessKey(os.getpid(), caller.held[0].start_time)
    assert service.keys == [own] * 4


def test_connection_callers_without_a_scope_read_per_call() -> None:
    """A stream not served by CoalescingServer falls back to SO_PEERCRED and a plain pin."""

    class NoScope:
        peer = None

    with pytest.raises(Exception, match="peercred"):
        ConnectionCallers(CountingHolds()).credentials(NoScope())


class _SocketTransport(RecordingTransport):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


class _Peer:
    def __init__(self, transport: CoalescingTransport) -> None:
        self._transport = transport


class _Stream:
    def __init__(self, transport: CoalescingTransport) -> None:
        self.peer = _Peer(transport)


class GoneAtFirstCall(CallerAttestor):
    def __init__(self) -> None:
        super().__init__(LinuxProcFs(), [])
        self.holds = 0

    def hold(self, pid: int) -> HeldProcess:
        self.holds += 1
        raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone")


async def test_a_connection_whose_caller_was_gone_at_its_first_call_never_looks_the_pid_up_again() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        conn = CoalescingTransport(_SocketTransport(a), asyncio.get_running_loop())
        caller = GoneAtFirstCall()
        callers = ConnectionCallers(caller)
        for _ in range(3):
            with pytest.raises(WorkloadAttestationError, match="is gone"):
                callers.credentials(_Stream(conn))
        assert caller.holds == 1  # a later call must not hold whatever process has that pid by then
