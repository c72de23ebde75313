"""Attest the process behind a Workload API connection, defended against PID reuse.

One ``/proc`` pass (stat + status) pins the caller: its start time and ids. The
unix attestor reuses those ids instead of reading ``/proc`` again. A pidfd is
held across attestation; afterwards the process must not have exited (pidfd
poll) and must have the same start time, else the selectors might describe a
different process that reused the PID::

    caller = CallerAttestor(LinuxProcFs(), [UnixAttestor(...)])
    facts = caller.pin(cred)                 # optional: the same pass, reused by attest()
    selectors = await caller.attest(PeerCred(pid=123, uid=1000, gid=1000))
"""

from __future__ import annotations

import contextvars
import os
import select
from collections.abc import Sequence
from dataclasses import dataclass

from agent.attest.base import WorkloadAttestor, attest_all
from agent.attest.procfs import ProcFs, StatusIds, parse_stat_start_time, parse_status
from agent.errors import AgentError, WorkloadAttestationError
from spiffe_py._peercred import PeerCred
from spiffe_py.selectors import Selector


@dataclass(frozen=True, slots=True)
class ProcessFacts:
    """What one ``/proc`` pass says about a process: pid, start time (clock ticks) and ids."""

    pid: int
    start_time: int
    ids: StatusIds


def read_facts(procfs: ProcFs, pid: int) -> ProcessFacts:
    """Read start time and ids of ``pid`` (stat + status)."""
    return ProcessFacts(pid, parse_stat_start_time(procfs.stat(pid)), parse_status(procfs.status(pid)))


def _exited(pidfd: int) -> bool:
    # a pidfd polls readable once the process has terminated; timeout 0 never blocks
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError as err:
        raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone") from err


# facts read by pin() for the attest() that follows in the same request task (grpclib: one task each)
_PINNED: contextvars.ContextVar[tuple[object, ProcessFacts] | None] = contextvars.ContextVar(
    "agent_pinned_caller", default=None
)


class CallerAttestor:
    """Runs workload attestors for a peer with the PID-reuse checks around them."""

    def __init__(self, procfs: ProcFs, attestors: Sequence[WorkloadAttestor], *, recheck_ids: bool = True) -> None:
        # recheck_ids=False skips re-reading status afterwards; safe when every selector derives from the
        # pinned ids or from things a setuid exec cannot change (no exe path/hash selectors)
        self._procfs = procfs
        self._attestors = tuple(attestors)
        self._recheck_ids = recheck_ids

    def pin(self, cred: PeerCred) -> ProcessFacts | None:
        """Read the caller's facts once for this request; None if unreadable (attest() then fails)."""
        try:
            facts = read_facts(self._procfs, cred.pid)
        except (OSError, AgentError):
            _PINNED.set(None)
            return None
        _PINNED.set((self, facts))
        return facts

    def _take_pinned(self, pid: int) -> ProcessFacts | None:
        pinned = _PINNED.get()
        _PINNED.set(None)  # one use: a later request in this context reads afresh
        if pinned is None or pinned[0] is not self or pinned[1].pid != pid:
            return None
        return pinned[1]

    async def attest(self, cred: PeerCred) -> frozenset[Selector]:
        """Selectors of the caller; WorkloadAttestationError if it exited or changed meanwhile."""
        pinned = self._take_pinned(cred.pid)
        pidfd = _open_pidfd(cred.pid)
        try:
            # facts pinned before the pidfd existed are still safe: a PID reused in between has
            # another start time, which the check after attestation compares
            facts = pinned or read_facts(self._procfs, cred.pid)
            if facts.ids.euid != cred.uid:
                raise WorkloadAttestationError(f"attest: pid {cred.pid!r} no longer runs as the connecting uid")
            selectors = await attest_all(self._attestors, cred.pid, facts.ids)
            self._check_unchanged(pidfd, facts)
            return selectors
        finally:
            os.close(pidfd)

    def _check_unchanged(self, pidfd: int, facts: ProcessFacts) -> None:
        if _exited(pidfd):
            raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} exited during attestation")
        changed = parse_stat_start_time(self._procfs.stat(facts.pid)) != facts.start_time
        if not changed and self._recheck_ids:
            ids = parse_status(self._procfs.status(facts.pid))
            changed = (ids.euid, ids.egid) != (facts.ids.euid, facts.ids.egid)
        if changed:
            raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} changed during attestation")
