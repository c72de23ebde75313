"""Attest the process behind a Workload API connection, defended against PID reuse.

A pidfd is opened and the start time and ids recorded BEFORE attestation; after
it, the process must still be alive with the same start time and ids, else the
selectors might describe a different process that reused the PID::

    caller = CallerAttestor(LinuxProcFs(), [UnixAttestor(...)])
    selectors = await caller.attest(PeerCred(pid=123, uid=1000, gid=1000))
"""

from __future__ import annotations

import os
import select
from collections.abc import Sequence
from dataclasses import dataclass

from agent.attest.base import WorkloadAttestor, attest_all
from agent.attest.procfs import ProcFs, parse_stat_start_time, parse_status
from agent.errors import WorkloadAttestationError
from spiffe_py._peercred import PeerCred
from spiffe_py.selectors import Selector


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    """What must not change while a process is attested."""

    start_time: int
    euid: int
    egid: int


def snapshot(procfs: ProcFs, pid: int) -> ProcessSnapshot:
    """Read start time and effective ids of ``pid``."""
    ids = parse_status(procfs.status(pid))
    return ProcessSnapshot(parse_stat_start_time(procfs.stat(pid)), ids.euid, ids.egid)


def _exited(pidfd: int) -> bool:
    # a pidfd polls readable once the process has terminated
    readable, _, _ = select.select([pidfd], [], [], 0)
    return bool(readable)


class CallerAttestor:
    """Runs workload attestors for a peer with the PID-reuse checks around them."""

    def __init__(self, procfs: ProcFs, attestors: Sequence[WorkloadAttestor]) -> None:
        self._procfs = procfs
        self._attestors = tuple(attestors)

    async def attest(self, cred: PeerCred) -> frozenset[Selector]:
        """Selectors of the caller; WorkloadAttestationError if it exited or changed meanwhile."""
        try:
            pidfd = os.pidfd_open(cred.pid)
        except OSError as err:
            raise WorkloadAttestationError(f"attest: caller pid {cred.pid!r} is gone") from err
        try:
            before = snapshot(self._procfs, cred.pid)
            if before.euid != cred.uid:
                raise WorkloadAttestationError(f"attest: pid {cred.pid!r} no longer runs as the connecting uid")
            selectors = await attest_all(self._attestors, cred.pid)
            if _exited(pidfd):
                raise WorkloadAttestationError(f"attest: caller pid {cred.pid!r} exited during attestation")
            if snapshot(self._procfs, cred.pid) != before:
                raise WorkloadAttestationError(f"attest: caller pid {cred.pid!r} changed during attestation")
            return selectors
        finally:
            os.close(pidfd)
