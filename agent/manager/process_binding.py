"""Task-bound credentials: per-process SVIDs for ``--bind-to-process`` entries.

Each attested process, identified by (pid, start time) so a reused pid is a
different process, gets its own key and SVIDs, never shared. The pure
:class:`BoundCredentials` store holds them; :class:`ProcessWatcher` (I/O) polls
a pidfd per process and reports the exit so the agent can revoke at once::

    store = BoundCredentials(max_processes=1024)
    store.admit(proc)                            # TooManyBoundProcessesError past the limit
    store.put_svid(proc, svid)
    watcher = ProcessWatcher(on_exit=lambda p: print(store.release(p)))
    watcher.watch(proc)                          # on_exit(proc) runs when it exits

The handler records the caller's process in a context variable (one per
Workload API request task) so the manager can tell callers apart without
changing the workload-source interface: ``set_caller(peer_process(cred))``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from agent.attest.procfs import LinuxProcFs, ProcFs, parse_stat_start_time
from agent.errors import AgentError
from spiffe_py._peercred import PeerCred
from spiffe_py.audit import AuditEvent, Outcome, build_event
from spiffe_py.rotation import half_life

if TYPE_CHECKING:
    from agent.manager.cache import IssuedSvid, JwtToken

DEFAULT_MAX_BOUND_PROCESSES = 1024
EXIT_REASON = "process exited"
EXIT_METHOD = "BoundProcessExit"


class TooManyBoundProcessesError(AgentError):
    """The agent already holds credentials for as many bound processes as it allows."""

    grpc_status = "RESOURCE_EXHAUSTED"


@dataclass(frozen=True, slots=True, order=True)
class ProcessKey:
    """One process instance: pid plus start time (clock ticks since boot), so pid reuse is told apart."""

    pid: int
    start_time: int


def process_key(procfs: ProcFs, pid: int) -> ProcessKey | None:
    """The key of ``pid`` now, or None if it cannot be read (gone, or not ours to see)."""
    try:
        return ProcessKey(pid, parse_stat_start_time(procfs.stat(pid)))
    except (OSError, AgentError):
        return None


_CALLER: contextvars.ContextVar[ProcessKey | None] = contextvars.ContextVar("agent_caller_process", default=None)


def set_caller(proc: ProcessKey | None) -> None:
    """Record the calling process for the current Workload API request (grpclib runs each in its own task)."""
    _CALLER.set(proc)


def current_caller() -> ProcessKey | None:
    """The process recorded by :func:`set_caller` in this task, if any."""
    return _CALLER.get()


def peer_process(cred: PeerCred) -> ProcessKey | None:
    """The key of the process behind a Workload API connection (read from the real ``/proc``)."""
    return process_key(LinuxProcFs(), cred.pid)


@dataclass(frozen=True, slots=True)
class Released:
    """What a process held when it was released: serials (lowercase hex) and jtis to revoke."""

    process: ProcessKey
    serials: tuple[str, ...]
    jtis: tuple[str, ...]


class AuditSink(Protocol):
    """Where the agent records audit events (agent.audit.AgentAudit)."""

    def append(self, event: AuditEvent) -> object:
        """Record one event."""
        ...


def exit_event(released: Released, *, now: datetime, actor: str) -> AuditEvent:
    """The audit record of a bound process's exit and the revocation of its credentials."""
    return build_event(
        now=now, actor=actor, spiffe_id=None, selectors=(), decision=Outcome.ALLOW, reason=EXIT_REASON,
        method=EXIT_METHOD,
        details={"pid": released.process.pid, "start_time": released.process.start_time,
                 "revoked_serials": list(released.serials), "revoked_jtis": list(released.jtis)},
    )


_JwtKey = tuple[ProcessKey, str, tuple[str, ...]]


class BoundCredentials:
    """SVIDs and JWT-SVIDs per (process, entry); pure, owned by the manager task.

    Every serial and jti ever minted for a process is remembered until it is
    released, so rotated-out credentials that are still valid get revoked too.
    """

    def __init__(self, *, max_processes: int = DEFAULT_MAX_BOUND_PROCESSES) -> None:
        if max_processes < 1:
            raise ValueError("bound credentials: max_processes must be positive")
        self._max = max_processes
        self._issued: dict[ProcessKey, tuple[set[str], set[str]]] = {}  # serials, jtis
        self._svids: dict[tuple[ProcessKey, str], IssuedSvid] = {}
        self._jwts: dict[_JwtKey, JwtToken] = {}

    def admitted(self, proc: ProcessKey) -> bool:
        """True if ``proc`` was admitted and not yet released."""
        return proc in self._issued

    def admit(self, proc: ProcessKey) -> bool:
        """Admit ``proc``; True if it is new. Raises TooManyBoundProcessesError past the limit."""
        if proc in self._issued:
            return False
        if len(self._issued) >= self._max:
            raise TooManyBoundProcessesError(
                f"agent: too many processes hold bound credentials (max {self._max}); try again when one exits"
            )
        self._issued[proc] = (set(), set())
        return True

    def svid(self, proc: ProcessKey, entry_id: str) -> IssuedSvid | None:
        """The process's SVID for ``entry_id``."""
        return self._svids.get((proc, entry_id))

    def put_svid(self, proc: ProcessKey, svid: IssuedSvid) -> bool:
        """Store an SVID minted for ``proc``; False (not stored) once the process was released."""
        issued = self._issued.get(proc)
        if issued is None:
            return False
        issued[0].add(f"{svid.serial:x}")
        self._svids[(proc, svid.entry_id)] = svid
        return True

    def jwt(self, proc: ProcessKey, entry_id: str, audience: Iterable[str], *, now: datetime) -> JwtToken | None:
        """The process's cached JWT-SVID for ``entry_id`` and ``audience`` while before half-life."""
        token = self._jwts.get((proc, entry_id, tuple(sorted(set(audience)))))
        if token is None or now >= half_life(token.issued_at, token.expires_at):
            return None
        return token

    def put_jwt(self, proc: ProcessKey, entry_id: str, token: JwtToken) -> bool:
        """Store a JWT-SVID minted for ``proc``; False (not stored) once the process was released."""
        issued = self._issued.get(proc)
        if issued is None:
            return False
        if token.jti:
            issued[1].add(token.jti)
        self._jwts[(proc, entry_id, tuple(sorted(set(token.audience))))] = token
        return True

    def release(self, proc: ProcessKey) -> Released:
        """Forget ``proc`` and everything minted for it; returns what must be revoked."""
        serials, jtis = self._issued.pop(proc, (set(), set()))
        for key in [k for k in self._svids if k[0] == proc]:
            del self._svids[key]
        for jkey in [k for k in self._jwts if k[0] == proc]:
            del self._jwts[jkey]
        return Released(proc, tuple(sorted(serials)), tuple(sorted(jtis)))

    def drop(self, svid_gone: Callable[[IssuedSvid], bool], jwt_gone: Callable[[str, JwtToken], bool]) -> None:
        """Drop SVIDs (and ``(entry_id, token)`` JWTs) for which the predicate holds; the mint loop re-issues."""
        for key in [k for k, s in self._svids.items() if svid_gone(s)]:
            del self._svids[key]
        for jkey in [k for k, t in self._jwts.items() if jwt_gone(k[1], t)]:
            del self._jwts[jkey]


class ProcessWatcher:
    """Watches processes through pidfds on the running loop; ``on_exit`` runs once per process."""

    def __init__(self, on_exit: Callable[[ProcessKey], None], procfs: ProcFs) -> None:
        self._on_exit = on_exit
        self._procfs = procfs
        self._fds: dict[ProcessKey, int] = {}

    def watching(self, proc: ProcessKey) -> bool:
        """True while ``proc`` is watched."""
        return proc in self._fds

    def watch(self, proc: ProcessKey) -> None:
        """Start watching; if ``proc`` already exited (or its pid now names another process) report it now."""
        if proc in self._fds:
            return
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(proc.pid)
        except OSError:
            loop.call_soon(self._on_exit, proc)
            return
        # checked after opening: the pidfd pins this pid, so a match means the same process
        if process_key(self._procfs, proc.pid) != proc:
            os.close(fd)
            loop.call_soon(self._on_exit, proc)
            return
        self._fds[proc] = fd
        loop.add_reader(fd, self._exited, proc)

    def _exited(self, proc: ProcessKey) -> None:
        self._forget(proc)
        self._on_exit(proc)

    def _forget(self, proc: ProcessKey) -> None:
        fd = self._fds.pop(proc, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def close(self) -> None:
        """Stop watching everything."""
        for proc in list(self._fds):
            self._forget(proc)
