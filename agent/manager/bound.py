"""Bound processes: admitting ``--bind-to-process`` callers, and revoking their SVIDs when they exit.

::

    bound = BoundProcesses(cache, servers, clock=clock, actor=identity.actor, audit=audit,
                           on_change=notify, on_admit=mint_kick.set)
    bound.bind(process)                   # TooManyBoundProcessesError past the limit; the exit is watched
    bound.revoke(released)                # RevokeOwn in the background, retried
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from spiffe_agent.attest.procfs import LinuxProcFs, ProcFs
from spiffe_agent.errors import NotReadyError
from spiffe_agent.manager.cache import WorkloadCache
from spiffe_agent.manager.client import ServerCallError
from spiffe_agent.manager.process_binding import (
    EXIT_REASON,
    AuditSink,
    ProcessKey,
    ProcessWatcher,
    Released,
    exit_event,
)
from spiffe_agent.manager.servers import MAX_BACKOFF, ServerPool
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError

log = logging.getLogger(__name__)

REVOKE_ATTEMPTS = 5  # RevokeOwn retries for an exited bound process (its SVIDs expire anyway)


class BoundProcesses:
    """Watches admitted processes; on exit releases their credentials, audits, and revokes them at the server."""

    def __init__(self, cache: WorkloadCache, servers: ServerPool, *, clock: Clock, actor: Callable[[], str],
                 audit: AuditSink | None, on_change: Callable[[], None], on_admit: Callable[[], None],
                 procfs: ProcFs | None = None) -> None:
        self._cache = cache
        self._servers = servers
        self._clock = clock
        self._actor = actor
        self._audit = audit  # bound-process exits are recorded in the agent's audit trail
        self._on_change = on_change
        self._on_admit = on_admit
        self._watcher = ProcessWatcher(self._exited, procfs or LinuxProcFs())
        self._revocations: set[asyncio.Task[None]] = set()

    def bind(self, process: ProcessKey) -> None:
        """Admit ``process`` for bound credentials (TooManyBoundProcessesError past the limit) and watch it."""
        if self._cache.bound.admit(process):
            self._watcher.watch(process)
            self._on_admit()

    def _exited(self, process: ProcessKey) -> None:
        released = self._cache.release_process(process)
        log.info(
            "bound process exited; its svids are revoked: pid=%d start_time=%d serials=%s jtis=%s",
            process.pid, process.start_time, ",".join(released.serials) or "-", ",".join(released.jtis) or "-",
        )
        self._record_exit(released)
        self._on_change()
        self.revoke(released)

    def _record_exit(self, released: Released) -> None:
        if self._audit is None:
            return
        try:
            self._audit.append(exit_event(released, now=self._clock.now(), actor=self._actor()))
        except SpiffeError as err:  # the revocation must go ahead even if the audit store fails
            log.error("audit: could not record the exit of pid %d: %s", released.process.pid, err)

    def revoke(self, released: Released) -> None:
        """Ask the server to revoke what ``released`` held, in the background."""
        if not (released.serials or released.jtis):
            return
        task = asyncio.create_task(self._revoke_own(released))
        self._revocations.add(task)
        task.add_done_callback(self._revocations.discard)

    async def _revoke_own(self, released: Released) -> None:
        backoff = 1.0
        for _ in range(REVOKE_ATTEMPTS):
            try:
                count = await self._servers.call(
                    lambda client: client.revoke_own(released.serials, released.jtis, EXIT_REASON))
            except (ServerCallError, NotReadyError) as err:
                log.warning("revoking svids of exited pid %d failed, retrying in %.0fs: %s",
                            released.process.pid, backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            log.info("server revoked %d svids of exited pid=%d (reason %r)", count, released.process.pid, EXIT_REASON)
            return
        log.error("gave up revoking svids of exited pid %d; they expire on their own", released.process.pid)
