"""unix attestor selectors from fake /proc text; attest_all fan-out; the caller captured at accept and its checks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator

import pytest
from grpclib.const import Status

from spiffe_agent.attest.base import CallerAttestor, attest_all
from spiffe_agent.attest.caller import Caller, CallerChangedError, Identity, capture, open_caller
from spiffe_agent.attest.procfs import (
    ExeId,
    LinuxProcFs,
    ProcessKey,
    StatusIds,
    boot_ticks,
    parse_stat_start_time,
    parse_status,
)
from spiffe_agent.attest.unix import CachedUserDb, UnixAttestor, unix_id_selectors
from spiffe_agent.errors import WorkloadAttestationError
from spiffe_agent.workloadapi.status import status_for
from spiffe_py._peercred import PeerCred
from spiffe_py.selectors import Selector

STATUS = """Name:\tapp
Umask:\t0022
State:\tS (sleeping)
Pid:\t4242
Uid:\t1000\t1001\t1001\t1001
Gid:\t2000\t2001\t2001\t2001
Groups:\t10 2001 3000
"""
STAT = "4242 (my app) with) paren) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100\n"


class FakeUsers:
    def user_name(self, uid: int) -> str | None:
        return {1001: "alice"}.get(uid)

    def group_name(self, gid: int) -> str | None:
        return {2001: "staff", 10: "wheel"}.get(gid)


class FakeStatusFile:
    """A held status file over FakeProcFs.status (so its reads are counted and scripted the same way)."""

    def __init__(self, read: Callable[[], str]) -> None:
        self.read = read
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeProcFs:
    def __init__(self, status: str = STATUS, stat: str = STAT) -> None:
        self.statuses = [status]
        self.stat_text = stat
        self.exe_ids = [(1, 2)]

    def status(self, pid: int) -> str:
        return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]

    def open_status(self, pid: int) -> FakeStatusFile:
        return FakeStatusFile(lambda: self.status(pid))

    def stat(self, pid: int) -> str:
        return self.stat_text

    def cgroup(self, pid: int) -> str:
        return "0::/\n"

    def exe_path(self, pid: int) -> str:
        return "/usr/bin/app"

    def exe_file(self, pid: int) -> tuple[int, int]:
        return self.exe_ids.pop(0) if len(self.exe_ids) > 1 else self.exe_ids[0]

    def exe_sha256(self, pid: int, size_limit: int) -> str:
        if size_limit == 1:
            raise WorkloadAttestationError("procfs: too big")
        return "ab" * 32


def test_parse_status_uses_effective_ids() -> None:
    ids = parse_status(STATUS)
    assert (ids.euid, ids.egid, ids.groups) == (1001, 2001, (10, 2001, 3000))


def test_parse_status_rejects_missing_uid() -> None:
    with pytest.raises(WorkloadAttestationError, match="lacks Uid/Gid"):
        parse_status("Name:\tx\n")


def test_parse_stat_start_time_handles_parens_in_comm() -> None:
    assert parse_stat_start_time(STAT) == 987654


def test_parse_stat_rejects_truncated() -> None:
    with pytest.raises(WorkloadAttestationError, match="malformed stat"):
        parse_stat_start_time("1 (x) S 1 2")


def test_unix_id_selectors_names_known_ids_only() -> None:
    got = {str(s) for s in unix_id_selectors(parse_status(STATUS), FakeUsers())}
    assert got == {
        "unix:uid:1001",
        "unix:user:alice",
        "unix:gid:2001",
        "unix:group:staff",
        "unix:supplementary_gid:10",
        "unix:supplementary_gid:2001",
        "unix:supplementary_gid:3000",
        "unix:supplementary_group:wheel",
        "unix:supplementary_group:staff",
    }


APP = ExeId(1, 2, "/usr/bin/app")


class StubCaller:
    """What attestors read from a :class:`Caller`: its pid and the identity snapshot taken at accept."""

    def __init__(self, pid: int = 4242, ids: StatusIds | None = None, exe: ExeId | None = APP) -> None:
        self.pid = pid
        self.identity = Identity(ids or parse_status(STATUS), exe)
        self.process = ProcessKey(pid, 987654)
        self.cred = PeerCred(pid, 1001, 2001)


CALLER = StubCaller()
CRED = PeerCred(pid=os.getpid(), uid=1001, gid=2001)  # FakeProcFs's ids, this process's pid (a real pidfd)
LATER = 10**15  # an accept long after FakeProcFs's start time


@contextlib.contextmanager
def captured(procfs: object, cred: PeerCred = CRED, accepted_at: int = LATER) -> Iterator[Caller]:
    """A real Caller of this process over a socketpair, closed afterwards."""
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        caller = capture(a, procfs, accepted_at=accepted_at, cred=cred)  # type: ignore[arg-type]
        try:
            yield caller
        finally:
            caller.close()


async def test_unix_attestor_path_discovery() -> None:
    sels = await UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True).attest(CALLER)  # type: ignore[arg-type]
    assert Selector("unix", "path:/usr/bin/app") in sels
    assert Selector("unix", "sha256:" + "ab" * 32) in sels


async def test_unix_attestor_negative_size_limit_skips_hash() -> None:
    attestor = UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True, workload_size_limit=-1)
    sels = await attestor.attest(CALLER)  # type: ignore[arg-type]
    assert not any(s.value.startswith("sha256:") for s in sels)
    assert Selector("unix", "path:/usr/bin/app") in sels


async def test_unix_attestor_size_limit_fails() -> None:
    attestor = UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True, workload_size_limit=1)
    with pytest.raises(WorkloadAttestationError):
        await attestor.attest(CALLER)  # type: ignore[arg-type]


async def test_unix_attestor_path_discovery_fails_without_an_exe_snapshot() -> None:
    attestor = UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True)
    with pytest.raises(WorkloadAttestationError, match="cannot resolve exe"):
        await attestor.attest(StubCaller(exe=None))  # type: ignore[arg-type]


class StaticAttestor:
    def __init__(self, name: str, result: frozenset[Selector] | Exception) -> None:
        self.name = name
        self._result = result

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        await asyncio.sleep(0)
        if isinstance(self._result, Exception):
            raise self._result
        return self._result


async def test_attest_all_unions_and_tolerates_one_failure() -> None:
    a = StaticAttestor("a", frozenset({Selector("a", "1")}))
    b = StaticAttestor("b", WorkloadAttestationError("boom"))
    c = StaticAttestor("c", frozenset({Selector("c", "2")}))
    assert await attest_all([a, b, c], CALLER) == {Selector("a", "1"), Selector("c", "2")}  # type: ignore[arg-type]


async def test_attest_all_fails_when_all_fail() -> None:
    b = StaticAttestor("b", WorkloadAttestationError("boom"))
    with pytest.raises(WorkloadAttestationError, match="all workload attestors failed"):
        await attest_all([b, b], CALLER)  # type: ignore[arg-type]


async def test_caller_attestor_real_process_round_trip() -> None:
    """The real /proc of this test process: captured over a real socket, attested, checked."""
    procfs = LinuxProcFs()
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        caller = capture(a, procfs, accepted_at=boot_ticks())
        try:
            assert caller.cred == PeerCred(os.getpid(), os.geteuid(), os.getegid())
            assert caller.process == ProcessKey(os.getpid(), parse_stat_start_time(procfs.stat(os.getpid())))
            exe = caller.identity.exe
            assert exe is not None and exe.path == os.path.realpath(f"/proc/{os.getpid()}/exe")
            sels = await CallerAttestor([UnixAttestor(procfs, FakeUsers())]).attest(caller)
        finally:
            caller.close()
    assert Selector("unix", f"uid:{os.geteuid()}") in sels


async def test_caller_attestor_rejects_changed_ids() -> None:
    procfs = FakeProcFs()
    changed = STATUS.replace("Gid:\t2000\t2001", "Gid:\t2000\t42")
    procfs.statuses = [STATUS, changed]  # at accept, then at the call: a setgid exec in between
    with captured(procfs) as caller, pytest.raises(CallerChangedError, match="changed its uid, gid or groups") as err:
        await CallerAttestor([UnixAttestor(procfs, FakeUsers())]).attest(caller)
    assert status_for(err.value) is Status.PERMISSION_DENIED


async def test_caller_attestor_rejects_another_executable() -> None:
    procfs = FakeProcFs()
    procfs.exe_ids = [(1, 2), (1, 3)]  # at accept, then at the call: an exec of another binary
    with captured(procfs) as caller, pytest.raises(CallerChangedError, match="runs another executable"):
        await CallerAttestor([UnixAttestor(procfs, FakeUsers())]).attest(caller)


def test_capture_rejects_uid_mismatch_with_peercred() -> None:
    with (pytest.raises(WorkloadAttestationError, match="no longer runs as the connecting uid"),
          captured(FakeProcFs(), cred=PeerCred(pid=os.getpid(), uid=5, gid=2001))):
        pass


def test_capture_refuses_a_process_that_started_after_the_accept() -> None:
    """PID reuse: the process now behind the peer's pid is younger than the connection."""
    with pytest.raises(WorkloadAttestationError, match="started after it connected"), \
            captured(FakeProcFs(), accepted_at=987653):
        pass
    with captured(FakeProcFs(), accepted_at=987654) as caller:  # the same tick is the same process
        assert caller.process == ProcessKey(os.getpid(), 987654)


async def test_a_caller_that_exited_before_accept_is_refused() -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    pidfd = os.pidfd_open(proc.pid)  # taken before the exit, as SO_PEERPIDFD would be
    proc.kill()
    await proc.wait()
    with pytest.raises(WorkloadAttestationError, match=f"pid {proc.pid}"):
        open_caller(PeerCred(proc.pid, os.geteuid(), os.getegid()), pidfd, LinuxProcFs(), accepted_at=boot_ticks())


class KillingAttestor:
    """Kills the attested process mid-attestation, as a PID-reuse race would start."""

    name = "killer"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        self._proc.kill()
        await self._proc.wait()
        return frozenset({Selector("unix", "uid:0")})


async def test_caller_exiting_during_attestation_is_rejected_by_the_pidfd_poll() -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    cred = PeerCred(proc.pid, os.geteuid(), os.getegid())
    caller = open_caller(cred, os.pidfd_open(proc.pid), LinuxProcFs(), accepted_at=boot_ticks())
    try:
        with pytest.raises(WorkloadAttestationError, match="has exited"):
            await CallerAttestor([KillingAttestor(proc)]).attest(caller)
    finally:
        caller.close()


class CountingUsers(FakeUsers):
    def __init__(self) -> None:
        self.calls = 0

    def user_name(self, uid: int) -> str | None:
        self.calls += 1
        return super().user_name(uid)

    def group_name(self, gid: int) -> str | None:
        self.calls += 1
        return super().group_name(gid)


def test_cached_user_db_remembers_names_and_unknowns_for_the_ttl_only() -> None:
    clock = [100.0]
    inner = CountingUsers()
    users = CachedUserDb(inner, ttl=30.0, monotonic=lambda: clock[0])
    assert [users.user_name(1001), users.user_name(7), users.group_name(10)] == ["alice", None, "wheel"]
    assert [users.user_name(1001), users.user_name(7), users.group_name(10)] == ["alice", None, "wheel"]
    assert inner.calls == 3
    clock[0] += 30.0  # expired: a renamed user shows its new name from now on
    assert users.user_name(1001) == "alice"
    assert inner.calls == 4
