"""Attest the process behind a Workload API connection, defended against PID reuse.

One ``/proc`` pass (stat + status) pins the caller: its start time and ids. The
unix attestor reuses those ids instead of reading ``/proc`` again. A pidfd is
held across attestation; afterwards the process must not have exited (pidfd
poll) and must have the same start time, else the selectors might describe a
different process that reused the PID::

    caller = CallerAttestor(LinuxProcFs(), [UnixAttestor(...)])
    facts = caller.pin(cred)                 # optional: the same pass, reused by attest()
    selectors = await caller.attest(PeerCred(pid=123, uid=1000, gid=1000))

A connection's SO_PEERCRED pid never changes, so the agent holds the caller for the
whole connection (:meth:`CallerAttestor.hold`: one pidfd and the ``status`` file held open,
the start time read once) and pins with it. Each call then re-reads only what a live process
can change (``status``, with pread on the held fd: ids after a setuid ``execve``) and polls
the held pidfd after attestation: while the pidfd
says the process is alive, its pid cannot have been reused, so ``/proc/<pid>`` was that
process. Once it exits, every later call on the connection fails::

    held = caller.hold(cred.pid)             # per connection; held.close() when it ends
    caller.pin(cred, held)                   # per call: one status read
    selectors = await caller.attest(cred)
"""

from __future__ import annotations

import contextvars
import os
import select
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.attest.base import WorkloadAttestor, attest_all
from agent.attest.procfs import ProcFs, StatusFile, StatusIds, parse_stat_start_time, parse_status
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


class HeldProcess:
    """A connection's caller: a pidfd and its ``status`` file held open, the start time read once.

    Used only on the event loop's thread; :meth:`close` (connection lost) may run while a call
    is awaiting its attestors, after which :meth:`exited` answers True, so that call fails.
    """

    __slots__ = ("_fd", "_poller", "_status", "pid", "start_time")

    def __init__(self, pid: int, pidfd: int, start_time: int, status: StatusFile) -> None:
        self.pid = pid
        self.start_time = start_time
        self._fd = pidfd  # besides its socket, a connection holds this fd and the status file's
        self._status = status
        self._poller = select.poll()  # registered once: each exited() is one poll(2)
        self._poller.register(pidfd, select.POLLIN)

    def exited(self) -> bool:
        """True once the process terminated (or the connection's hold was released)."""
        return self._fd < 0 or bool(self._poller.poll(0))

    def status(self) -> str:
        """The held process's current ``status`` text (OSError once it is gone)."""
        return self._status.read()

    def close(self) -> None:
        """Release the pidfd and the status file (idempotent)."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            self._poller.unregister(fd)
            os.close(fd)
        self._status.close()


def _open_pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError as err:
        raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone") from err


# facts read by pin() for the attest() that follows in the same request task (grpclib: one task each)
_PINNED: contextvars.ContextVar[tuple[object, ProcessFacts | None, HeldProcess | None] | None] = contextvars.ContextVar(
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

    def hold(self, pid: int) -> HeldProcess:
        """Open a pidfd for ``pid`` and read its start time once (per connection); the caller closes it.

        Raises:
            WorkloadAttestationError: the process is gone (or exited while it was read).
        """
        pidfd = _open_pidfd(pid)
        status: StatusFile | None = None
        try:
            start_time = parse_stat_start_time(self._procfs.stat(pid))
            status = self._procfs.open_status(pid)
            # opened after the pidfd existed and the process is still alive: both were this process's
            if _exited(pidfd):
                raise WorkloadAttestationError(f"attest: caller pid {pid!r} is gone")
        except BaseException:
            if status is not None:
                status.close()
            os.close(pidfd)
            raise
        return HeldProcess(pid, pidfd, start_time, status)

    def pin(self, cred: PeerCred, held: HeldProcess | None = None) -> ProcessFacts | None:
        """Read the caller's facts once for this request; None if unreadable (attest() then fails).

        With the connection's ``held`` process only its held ``status`` file is read (the start time is the held one).
        """
        try:
            if held is not None and held.pid == cred.pid:
                # by path: the poll after attestation proves the pid was this process all along
                facts = ProcessFacts(cred.pid, held.start_time, parse_status(held.status()))
            else:
                held = None
                facts = read_facts(self._procfs, cred.pid)
        except (OSError, AgentError):
            # with a held process attest() must fail too, never look the (maybe reused) pid up afresh
            _PINNED.set(None if held is None else (self, None, held))
            return None
        _PINNED.set((self, facts, held))
        return facts

    def _take_pinned(self, pid: int) -> tuple[ProcessFacts | None, HeldProcess | None] | None:
        pinned = _PINNED.get()
        _PINNED.set(None)  # one use: a later request in this context reads afresh
        if pinned is None or pinned[0] is not self:
            return None
        facts, held = pinned[1], pinned[2]
        if (facts.pid if facts is not None else held.pid if held is not None else None) != pid:
            return None
        return facts, held

    async def attest(self, cred: PeerCred) -> frozenset[Selector]:
        """Selectors of the caller; WorkloadAttestationError if it exited or changed meanwhile."""
        pinned, held = self._take_pinned(cred.pid) or (None, None)
        if held is not None:
            if pinned is None:  # the held process's status could not be read
                gone = "has exited" if held.exited() else "cannot be read"
                raise WorkloadAttestationError(f"attest: caller pid {cred.pid!r} {gone}")
            return await self._attest_held(cred, pinned, held)
        pidfd = _open_pidfd(cred.pid)
        try:
            # facts pinned before the pidfd existed are still safe: a PID reused in between has
            # another start time, which the check after attestation compares
            facts = pinned or read_facts(self._procfs, cred.pid)
            selectors = await self._attest_facts(cred, facts)
            self._check_unchanged(pidfd, facts)
            return selectors
        finally:
            os.close(pidfd)

    async def _attest_held(self, cred: PeerCred, facts: ProcessFacts, held: HeldProcess) -> frozenset[Selector]:
        if held.exited():  # before: no attestor work (and no docker round trip) for a dead caller
            raise WorkloadAttestationError(f"attest: caller pid {cred.pid!r} has exited")
        selectors = await self._attest_facts(cred, facts)
        self._recheck(facts, held.status)
        # last: the pidfd was held before every /proc read of this call, and while it says "alive"
        # the pid cannot have been reused, so they all read this process (no start-time re-read)
        if held.exited():
            raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} exited during attestation")
        return selectors

    async def _attest_facts(self, cred: PeerCred, facts: ProcessFacts) -> frozenset[Selector]:
        if facts.ids.euid != cred.uid:
            raise WorkloadAttestationError(f"attest: pid {cred.pid!r} no longer runs as the connecting uid")
        return await attest_all(self._attestors, cred.pid, facts.ids)

    def _recheck(self, facts: ProcessFacts, status: Callable[[], str] | None = None) -> None:
        # a setuid exec during attestation changes ids and exe but neither pid nor start time
        if self._recheck_ids:
            try:
                ids = parse_status(status() if status is not None else self._procfs.status(facts.pid))
            except OSError as err:
                raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} exited during attestation") from err
            if (ids.euid, ids.egid) != (facts.ids.euid, facts.ids.egid):
                raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} changed during attestation")

    def _check_unchanged(self, pidfd: int, facts: ProcessFacts) -> None:
        if _exited(pidfd):
            raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} exited during attestation")
        if parse_stat_start_time(self._procfs.stat(facts.pid)) != facts.start_time:
            raise WorkloadAttestationError(f"attest: caller pid {facts.pid!r} changed during attestation")
        self._recheck(facts)
