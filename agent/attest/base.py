"""Workload attestor seam, the concurrent fan-out and the checked attestation of a caller.

All configured attestors run at once on the connection's :class:`~agent.attest.caller.Caller`;
their selectors are unioned and the call fails only if every attestor failed (SPIRE semantics).
:class:`CallerAttestor` then checks that the caller is alive and unchanged since accept, so the
selectors describe the process that is still on the other end::

    selectors = await CallerAttestor([unix, docker]).attest(caller)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from spiffe_agent.attest.caller import Caller
from spiffe_agent.errors import WorkloadAttestationError
from spiffe_py.selectors import Selector

log = logging.getLogger(__name__)


class WorkloadAttestor(Protocol):
    """Produces selectors for the process behind a connection."""

    name: str

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        """Selectors describing ``caller`` (its pid, the identity snapshot taken at accept)."""
        ...


async def attest_all(attestors: Sequence[WorkloadAttestor], caller: Caller) -> frozenset[Selector]:
    """Run all attestors concurrently and union their selectors; fail only if all fail."""
    if not attestors:
        raise ValueError("attest: no workload attestors configured")
    if len(attestors) == 1:  # the common case: no gather (tasks) for nothing to run concurrently
        return await _attest_one(attestors[0], caller)
    results = await asyncio.gather(*(a.attest(caller) for a in attestors), return_exceptions=True)
    selectors: set[Selector] = set()
    failures = 0
    for attestor, result in zip(attestors, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            failures += 1
            log.warning("workload attestor %s failed for pid %d: %s", attestor.name, caller.pid, result)
        else:
            selectors |= result
    if failures == len(attestors):
        raise _all_failed(caller.pid)
    return frozenset(selectors)


async def _attest_one(attestor: WorkloadAttestor, caller: Caller) -> frozenset[Selector]:
    """One attestor: its selectors, or the same failure :func:`attest_all` reports when all fail."""
    try:
        return await attestor.attest(caller)
    except Exception as err:
        log.warning("workload attestor %s failed for pid %d: %s", attestor.name, caller.pid, err)
        raise _all_failed(caller.pid) from err


def _all_failed(pid: int) -> WorkloadAttestationError:
    return WorkloadAttestationError(f"attest: all workload attestors failed for pid {pid!r}")


class CallerAttestor:
    """Attests a connection's caller: no work for a dead one, and its identity re-checked afterwards."""

    def __init__(self, attestors: Sequence[WorkloadAttestor]) -> None:
        self._attestors = tuple(attestors)

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        """Selectors of ``caller``; WorkloadAttestationError (CallerChangedError) if it exited (changed)."""
        if caller.exited():  # before: no attestor work (and no docker round trip) for a dead caller
            raise WorkloadAttestationError(f"attest: caller pid {caller.pid!r} has exited")
        selectors = await attest_all(self._attestors, caller)
        caller.check()
        return selectors
