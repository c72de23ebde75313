"""Task-bound credentials (issue 5): per-process store, pidfd watcher, cache integration, expiring entries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpclib.const import Status

from spiffe_agent.attest.procfs import LinuxProcFs
from spiffe_agent.manager.cache import (
    BoundCredentials,
    Entry,
    IssuedSvid,
    JwtToken,
    SyncUpdate,
    TooManyBoundProcessesError,
    WorkloadCache,
)
from spiffe_agent.manager.convert import task_end
from spiffe_agent.manager.manager import Manager, ManagerConfig
from spiffe_agent.manager.process_binding import ProcessKey, ProcessWatcher, process_key
from spiffe_agent.workloadapi.handler import check_not_revoked
from spiffe_agent.workloadapi.status import status_for
from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.audit import AuditEvent
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.clock import ManualClock
from spiffe_py.errors import InvalidJwtSvidError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = Selector("unix", "uid:1000")
SID = SpiffeId.parse("spiffe://example.org/task")
P1 = ProcessKey(100, 5000)
P2 = ProcessKey(101, 5001)


def bound_entry(eid: str = "b", **kw: object) -> Entry:
    return Entry(id=eid, spiffe_id=SID, selectors=frozenset({UID}), bind_to_process=True, **kw)  # type: ignore[arg-type]


def svid(entry_id: str, serial: int, start: datetime = NOW) -> IssuedSvid:
    return IssuedSvid(entry_id, SID, (b"leaf",), b"KEY", start, start + timedelta(hours=1), serial=serial)


def jwt(jti: str, audience: tuple[str, ...] = ("a",)) -> JwtToken:
    return JwtToken("tok", SID, audience, NOW, NOW + timedelta(minutes=10), jti=jti)


def cache_with(*entries: Entry) -> WorkloadCache:
    cache = WorkloadCache()
    cache.apply_sync([SyncUpdate(full=True, entries=entries, bundle=SpiffeBundle(TrustDomain.parse("example.org")))])
    return cache


# ---- BoundCredentials -------------------------------------------------------------------------


def test_admit_is_bounded_with_a_clear_error() -> None:
    store = BoundCredentials(max_processes=1)
    assert store.admit(P1) is True
    assert store.admit(P1) is False  # already admitted: no second slot used
    with pytest.raises(TooManyBoundProcessesError, match=r"too many processes .* \(max 1\)") as err:
        store.admit(P2)
    assert status_for(err.value) is Status.RESOURCE_EXHAUSTED
    store.release(P1)
    assert store.admit(P2) is True


def test_release_returns_every_serial_and_jti_ever_minted_including_rotated_ones() -> None:
    store = BoundCredentials()
    store.admit(P1)
    store.admit(P2)
    store.put_svid(P1, svid("b", 0xA1))
    store.put_svid(P1, svid("b", 0xA2))  # rotation: the old one is still valid until it expires
    store.put_jwt(P1, "b", jwt("j1"))
    store.put_jwt(P1, "b", jwt("j2"))
    store.put_svid(P2, svid("b", 0xB1))
    released = store.release(P1)
    assert released.serials == ("a1", "a2")
    assert released.jtis == ("j1", "j2")
    assert store.svid(P1, "b") is None
    assert store.svid(P2, "b") is not None and store.svid(P2, "b").serial == 0xB1  # type: ignore[union-attr]
    assert not store.admitted(P1)


def test_nothing_is_stored_for_a_released_process() -> None:
    store = BoundCredentials()
    assert store.put_svid(P1, svid("b", 1)) is False
    assert store.put_jwt(P1, "b", jwt("j")) is False
    assert store.release(P1).serials == ()


def test_jwt_is_per_process_and_refreshed_at_half_life() -> None:
    store = BoundCredentials()
    store.admit(P1)
    store.admit(P2)
    store.put_jwt(P1, "b", jwt("j1", ("y", "x")))
    assert store.jwt(P1, "b", ["x", "y"], now=NOW) is not None
    assert store.jwt(P2, "b", ["x", "y"], now=NOW) is None  # never shared with another process
    assert store.jwt(P1, "b", ["x", "y"], now=NOW + timedelta(minutes=5)) is None


# ---- cache integration ------------------------------------------------------------------------


def test_bound_entry_never_gets_a_shared_svid_only_per_process_ones() -> None:
    cache = cache_with(bound_entry(), Entry(id="s", spiffe_id=SID, selectors=frozenset({UID})))
    assert [e.id for e in cache.svid_targets([{UID}], now=NOW)] == ["s"]
    assert cache.bound_targets([({UID}, P1)], now=NOW) == []  # not admitted yet
    cache.bound.admit(P1)
    cache.bound.admit(P2)
    targets = cache.bound_targets([({UID}, P1), ({UID}, P2)], now=NOW)
    assert sorted((e.id, p) for e, p in targets) == [("b", P1), ("b", P2)]
    cache.bound.put_svid(P1, svid("b", 7))
    assert [p for _, p in cache.bound_targets([({UID}, P1), ({UID}, P2)], now=NOW)] == [P2]


def test_view_shows_only_the_callers_own_bound_svid() -> None:
    cache = cache_with(bound_entry())
    cache.bound.admit(P1)
    cache.bound.put_svid(P1, svid("b", 7))
    own = cache.view({UID}, P1)
    assert own.svids()[0][1].serial == 7
    other = cache.view({UID}, P2)
    assert other.identities and other.identities[0].svid is None
    anonymous = cache.view({UID})
    assert anonymous.complete and not anonymous.svids()  # no process: refused, never someone else's SVID


def test_release_process_revokes_locally_until_a_full_sync_echoes_it() -> None:
    cache = cache_with(bound_entry())
    cache.bound.admit(P1)
    cache.bound.put_svid(P1, svid("b", 0x1F))
    cache.bound.put_jwt(P1, "b", jwt("jti-1"))
    released = cache.release_process(P1)
    assert released.serials == ("1f",) and released.jtis == ("jti-1",)
    assert "jti-1" in cache.view({UID}).revoked_jtis
    # the next full sync (before the server's own list has it) must not forget the local revocation
    cache.apply_sync([SyncUpdate(full=True, entries=(bound_entry(),))])
    assert "jti-1" in cache.revoked_jtis()
    cache.apply_sync([SyncUpdate(full=True, entries=(bound_entry(),))])
    assert "jti-1" not in cache.revoked_jtis()  # by now the server lists it itself (or it was refused)


def test_server_revocation_drops_a_bound_svid_for_reissue() -> None:
    cache = cache_with(bound_entry())
    cache.bound.admit(P1)
    cache.bound.put_svid(P1, svid("b", 0x2A))
    cache.apply_sync([SyncUpdate(full=False, revocations=(("x509", "2a"),))])
    assert cache.bound.svid(P1, "b") is None


def test_entry_losing_bind_to_process_drops_bound_svids() -> None:
    cache = cache_with(bound_entry())
    cache.bound.admit(P1)
    cache.bound.put_svid(P1, svid("b", 3))
    cache.apply_sync([SyncUpdate(full=False, entries=(Entry(id="b", spiffe_id=SID, selectors=frozenset({UID})),))])
    assert cache.bound.svid(P1, "b") is None


def test_expired_entry_is_dropped_with_its_svids_at_expires_at() -> None:
    end = int((NOW + timedelta(seconds=20)).timestamp())
    task = Entry(id="t", spiffe_id=SID, selectors=frozenset({UID}), expires_at=end)
    cache = cache_with(task)
    cache.put_svid(svid("t", 9))
    assert cache.next_expiry() == end
    assert cache.drop_expired(now=NOW + timedelta(seconds=19)) is False
    assert cache.view({UID}).svids()
    assert cache.drop_expired(now=NOW + timedelta(seconds=20)) is True
    assert cache.view({UID}).identities == ()
    assert cache.svid_targets([{UID}], now=NOW + timedelta(seconds=21)) == []
    assert cache.next_expiry() == 0


def test_task_end_is_the_earlier_of_expires_at_and_max_lifetime() -> None:
    assert task_end(types_pb2.Entry()) == 0
    assert task_end(types_pb2.Entry(expires_at=500)) == 500
    assert task_end(types_pb2.Entry(created_at=100, max_lifetime=60)) == 160
    assert task_end(types_pb2.Entry(expires_at=150, created_at=100, max_lifetime=60)) == 150


def test_revoked_jti_is_refused_by_validate() -> None:
    cache = cache_with(bound_entry())
    cache.apply_sync([SyncUpdate(full=False, revocations=(("jwt", "dead"),))])
    view = cache.view({UID})
    check_not_revoked({"jti": "alive"}, view)
    check_not_revoked({}, view)
    with pytest.raises(InvalidJwtSvidError, match="revoked"):
        check_not_revoked({"jti": "dead"}, view)


# ---- the pidfd watcher (real processes) -------------------------------------------------------


def _spawn() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


def test_process_key_reads_the_start_time_and_none_for_missing() -> None:
    key = process_key(LinuxProcFs(), os.getpid())
    assert key is not None and key.pid == os.getpid() and key.start_time > 0
    assert process_key(LinuxProcFs(), 2**22 + 12345) is None


async def test_watcher_reports_exit_of_a_real_process() -> None:
    proc = _spawn()
    key = process_key(LinuxProcFs(), proc.pid)
    assert key is not None
    exited: asyncio.Queue[ProcessKey] = asyncio.Queue()
    watcher = ProcessWatcher(exited.put_nowait, LinuxProcFs())
    watcher.watch(key)
    assert watcher.watching(key)
    assert exited.empty()
    assert proc.stdin is not None
    proc.stdin.close()  # the child exits on EOF
    assert await asyncio.wait_for(exited.get(), 10) == key
    assert not watcher.watching(key)
    proc.wait()


async def test_watcher_reports_a_reused_or_gone_pid_at_once() -> None:
    proc = _spawn()
    key = process_key(LinuxProcFs(), proc.pid)
    assert key is not None
    exited: asyncio.Queue[ProcessKey] = asyncio.Queue()
    watcher = ProcessWatcher(exited.put_nowait, LinuxProcFs())
    stale = ProcessKey(proc.pid, key.start_time - 1)  # same pid, another start time: a different process
    watcher.watch(stale)
    assert await asyncio.wait_for(exited.get(), 5) == stale
    gone = ProcessKey(2**22 + 12345, 1)
    watcher.watch(gone)
    assert await asyncio.wait_for(exited.get(), 5) == gone
    watcher.close()
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()


# ---- the manager: exit -> local revocation + audit record -------------------------------------


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> object:
        self.events.append(event)
        return event.to_dict()


async def test_manager_records_and_revokes_a_bound_process_exit(tmp_path: Path) -> None:
    """A bound process exits: its jti is refused locally at once and the exit lands in the audit trail."""
    audit = RecordingAudit()
    config = ManagerConfig(TrustDomain.parse("example.org"), (("127.0.0.1", 1),), tmp_path)
    manager = Manager(config, clock=ManualClock(NOW), audit=audit)
    manager.cache.apply_sync([SyncUpdate(full=True, entries=(bound_entry(),))])
    proc = _spawn()
    key = process_key(LinuxProcFs(), proc.pid)
    assert key is not None
    try:
        view = manager.view(frozenset({UID}), key)  # binds and watches the caller
        assert view.identities[0].svid is None
        manager.cache.bound.put_svid(key, svid("b", 0x77))
        manager.cache.bound.put_jwt(key, "b", jwt("jti-x"))
        assert proc.stdin is not None
        proc.stdin.close()
        for _ in range(500):
            if audit.events:
                break
            await asyncio.sleep(0.01)
        (event,) = audit.events
        assert event.method == "BoundProcessExit" and event.reason == "process exited"
        assert event.details["pid"] == proc.pid
        assert event.details["revoked_serials"] == ["77"] and event.details["revoked_jtis"] == ["jti-x"]
        assert "jti-x" in manager.view(frozenset({UID})).revoked_jtis
        assert not manager.cache.bound.admitted(key)
    finally:
        proc.wait()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # the RevokeOwn retry (no server here)
