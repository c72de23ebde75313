"""Workload attestor seam and the concurrent fan-out.

All configured attestors run at once; their selectors are unioned and the call
fails only if every attestor failed (SPIRE semantics)::

    selectors = await attest_all([unix, docker], pid)        # or pass ids already read from status
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from agent.attest.procfs import StatusIds
from agent.errors import WorkloadAttestationError
from spiffe_py.selectors import Selector

log = logging.getLogger(__name__)


class WorkloadAttestor(Protocol):
    """Produces selectors for a local process."""

    name: str

    async def attest(self, pid: int, ids: StatusIds | None = None) -> frozenset[Selector]:
        """Selectors describing ``pid``; ``ids``, when given, were just read from its status (no re-read)."""
        ...


async def attest_all(
    attestors: Sequence[WorkloadAttestor], pid: int, ids: StatusIds | None = None
) -> frozenset[Selector]:
    """Run all attestors concurrently and union their selectors; fail only if all fail."""
    if not attestors:
        raise ValueError("attest: no workload attestors configured")
    if len(attestors) == 1:  # the common case: no gather (tasks) for nothing to run concurrently
        return await _attest_one(attestors[0], pid, ids)
    results = await asyncio.gather(*(a.attest(pid, ids) for a in attestors), return_exceptions=True)
    selectors: set[Selector] = set()
    failures = 0
    for attestor, result in zip(attestors, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, Exception):
                raise result
            failures += 1
            log.warning("workload attestor %s failed for pid %d: %s", attestor.name, pid, result)
        else:
            selectors |= result
    if failures == len(attestors):
        raise _all_failed(pid)
    return frozenset(selectors)


async def _attest_one(attestor: WorkloadAttestor, pid: int, ids: StatusIds | None) -> frozenset[Selector]:
    """One attestor: its selectors, or the same failure :func:`attest_all` reports when all fail."""
    try:
        return await attestor.attest(pid, ids)
    except Exception as err:
        log.warning("workload attestor %s failed for pid %d: %s", attestor.name, pid, err)
        raise _all_failed(pid) from err


def _all_failed(pid: int) -> WorkloadAttestationError:
    return WorkloadAttestationError(f"attest: all workload attestors failed for pid {pid!r}")
