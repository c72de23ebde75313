"""Task-bound credentials: per-process SVIDs for ``--bind-to-process`` entries.

Each attested process, identified by (pid, start time) so a reused pid is a
different process, gets its own key and SVIDs, never shared. The pure store
(``spiffe_agent.manager.cache.BoundCredentials``) holds them; :class:`ProcessWatcher` (I/O)
polls a pidfd per process and reports the exit so the agent can revoke at once::

    watcher = ProcessWatcher(on_exit=lambda p: print(cache.release_process(p)), procfs=LinuxProcFs())
    watcher.watch(proc)                          # on_exit(proc) runs when it exits
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from spiffe_agent.attest.procfs import ProcessKey, ProcFs, parse_stat_start_time
from spiffe_agent.errors import AgentError
from spiffe_py.audit import AuditEvent, Outcome, build_event

__all__ = ["AuditSink", "ProcessKey", "ProcessWatcher", "Released", "exit_event", "process_key"]

EXIT_REASON = "process exited"
EXIT_METHOD = "BoundProcessExit"


def process_key(procfs: ProcFs, pid: int) -> ProcessKey | None:
    """The key of ``pid`` now, or None if it cannot be read (gone, or not ours to see)."""
    try:
        return ProcessKey(pid, parse_stat_start_time(procfs.stat(pid)))
    except (OSError, AgentError):
        return None


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
