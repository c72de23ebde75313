"""unix attestor selectors from fake /proc text; attest_all fan-out; PID-reuse checks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from agent.app import ConnectionCallers
from agent.attest.base import attest_all
from agent.attest.caller import CallerAttestor
from agent.attest.procfs import LinuxProcFs, StatusIds, parse_stat_start_time, parse_status
from agent.attest.unix import CachedUserDb, UnixAttestor, unix_id_selectors
from agent.errors import WorkloadAttestationError
from agent.manager.process_binding import ProcessKey
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


async def test_unix_attestor_path_discovery() -> None:
    sels = await UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True).attest(4242)
    assert Selector("unix", "path:/usr/bin/app") in sels
    assert Selector("unix", "sha256:" + "ab" * 32) in sels


async def test_unix_attestor_negative_size_limit_skips_hash() -> None:
    sels = await UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True, workload_size_limit=-1).attest(1)
    assert not any(s.value.startswith("sha256:") for s in sels)
    assert Selector("unix", "path:/usr/bin/app") in sels


async def test_unix_attestor_size_limit_fails() -> None:
    attestor = UnixAttestor(FakeProcFs(), FakeUsers(), discover_workload_path=True, workload_size_limit=1)
    with pytest.raises(WorkloadAttestationError):
        await attestor.attest(1)


class StaticAttestor:
    def __init__(self, name: str, result: frozenset[Selector] | Exception) -> None:
        self.name = name
        self._result = result

    async def attest(self, pid: int, ids: StatusIds | None = None) -> frozenset[Selector]:
        await asyncio.sleep(0)
        if isinstance(self._result, Exception):
            raise self._result
        return self._result


async def test_attest_all_unions_and_tolerates_one_failure() -> None:
    a = StaticAttestor("a", frozenset({Selector("a", "1")}))
    b = StaticAttestor("b", WorkloadAttestationError("boom"))
    c = StaticAttestor("c", frozenset({Selector("c", "2")}))
    assert await attest_all([a, b, c], 1) == {Selector("a", "1"), Selector("c", "2")}


async def test_attest_all_fails_when_all_fail() -> None:
    b = StaticAttestor("b", WorkloadAttestationError("boom"))
    with pytest.raises(WorkloadAttestationError, match="all workload attestors failed"):
        await attest_all([b, b], 1)


async def test_caller_attestor_real_process_round_trip() -> None:
    """The real /proc of this test process passes the PID-reuse checks."""
    cred = PeerCred(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())
    procfs = LinuxProcFs()
    sels = await CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())]).attest(cred)
    assert Selector("unix", f"uid:{os.geteuid()}") in sels


async def test_caller_attestor_rejects_changed_ids() -> None:
    changed = STATUS.replace("Uid:\t1000\t1001", "Uid:\t1000\t0")
    procfs = FakeProcFs()
    procfs.statuses = [STATUS, changed]  # the pin (reused by the unix attestor), the re-check after
    cred = PeerCred(pid=os.getpid(), uid=1001, gid=2001)
    with pytest.raises(WorkloadAttestationError, match="changed during attestation"):
        await CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())]).attest(cred)


async def test_caller_attestor_rejects_uid_mismatch_with_peercred() -> None:
    cred = PeerCred(pid=os.getpid(), uid=5, gid=2001)
    with pytest.raises(WorkloadAttestationError, match="no longer runs as the connecting uid"):
        await CallerAttestor(FakeProcFs(), []).attest(cred)


async def test_caller_attestor_rejects_exited_process() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    cred = PeerCred(pid=proc.pid, uid=os.geteuid(), gid=os.getegid())
    with pytest.raises(WorkloadAttestationError, match="is gone"):
        await CallerAttestor(LinuxProcFs(), []).attest(cred)


class CountingProcFs(FakeProcFs):
    """FakeProcFs that counts reads and can report a new start time after ``stat_changes_after`` reads."""

    def __init__(self, stat_changes_after: int = 0) -> None:
        super().__init__()
        self.reads: list[str] = []
        self._stat_changes_after = stat_changes_after

    def status(self, pid: int) -> str:
        self.reads.append("status")
        return super().status(pid)

    def stat(self, pid: int) -> str:
        self.reads.append("stat")
        if self._stat_changes_after and self.reads.count("stat") > self._stat_changes_after:
            return STAT.replace(" 987654 ", " 987655 ")  # the PID now belongs to a newer process
        return super().stat(pid)


async def test_pin_then_attest_reads_proc_once_and_rechecks_start_time_only() -> None:
    procfs = CountingProcFs()
    caller = CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())], recheck_ids=False)
    cred = PeerCred(pid=os.getpid(), uid=1001, gid=2001)
    facts = caller.pin(cred)
    assert facts is not None and (facts.pid, facts.start_time, facts.ids.euid) == (os.getpid(), 987654, 1001)
    sels = await caller.attest(cred)
    assert Selector("unix", "user:alice") in sels
    assert procfs.reads == ["stat", "status", "stat"]  # the pin's pass, then the start time re-check


async def test_attest_without_pin_reads_its_own_facts_and_rechecks_ids() -> None:
    procfs = CountingProcFs()
    sels = await CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())]).attest(
        PeerCred(pid=os.getpid(), uid=1001, gid=2001))
    assert Selector("unix", "uid:1001") in sels
    assert procfs.reads == ["stat", "status", "stat", "status"]


async def test_pin_of_another_attestor_or_pid_is_not_used() -> None:
    procfs = CountingProcFs()
    cred = PeerCred(pid=os.getpid(), uid=1001, gid=2001)
    CallerAttestor(procfs, []).pin(cred)
    mine = CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())], recheck_ids=False)
    mine.pin(PeerCred(pid=1, uid=1001, gid=2001))
    procfs.reads.clear()
    await mine.attest(cred)
    assert procfs.reads == ["stat", "status", "stat"]  # read afresh: the pinned facts were for pid 1


async def test_start_time_changed_after_pin_is_rejected_as_pid_reuse() -> None:
    procfs = CountingProcFs(stat_changes_after=1)
    caller = CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())], recheck_ids=False)
    cred = PeerCred(pid=os.getpid(), uid=1001, gid=2001)
    caller.pin(cred)
    with pytest.raises(WorkloadAttestationError, match="changed during attestation"):
        await caller.attest(cred)


async def test_pin_of_unreadable_process_returns_none_and_attest_fails() -> None:
    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    caller = CallerAttestor(LinuxProcFs(), [])
    cred = PeerCred(pid=proc.pid, uid=os.geteuid(), gid=os.getegid())
    assert caller.pin(cred) is None
    with pytest.raises(WorkloadAttestationError, match="is gone"):
        await caller.attest(cred)


class KillingAttestor:
    """Kills the attested process mid-attestation, as a PID-reuse race would start."""

    name = "killer"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc

    async def attest(self, pid: int, ids: StatusIds | None = None) -> frozenset[Selector]:
        self._proc.kill()
        await self._proc.wait()
        return frozenset({Selector("unix", "uid:0")})


async def test_caller_exiting_during_attestation_is_rejected_by_the_pidfd_poll() -> None:
    proc = await asyncio.create_subprocess_exec("sleep", "30")
    caller = CallerAttestor(LinuxProcFs(), [KillingAttestor(proc)])
    cred = PeerCred(pid=proc.pid, uid=os.geteuid(), gid=os.getegid())
    caller.pin(cred)
    with pytest.raises(WorkloadAttestationError, match="exited during attestation"):
        await caller.attest(cred)


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


async def test_app_process_of_pins_the_facts_attest_then_reuses() -> None:
    procfs = CountingProcFs()
    caller = CallerAttestor(procfs, [UnixAttestor(procfs, FakeUsers())], recheck_ids=False)
    cred = PeerCred(pid=os.getpid(), uid=1001, gid=2001)
    # no connection scope (no held process): the per-call path pins stat + status
    assert ConnectionCallers(caller).process_of(cred) == ProcessKey(os.getpid(), 987654)
    await caller.attest(cred)
    assert procfs.reads == ["stat", "status", "stat"]
