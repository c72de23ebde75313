"""Sync with the server: the SyncAuthorized stream applied to the workload cache (async shell).

::

    sync = SyncLoop(servers, identity, cache, on_change=changed, resync_interval=60.0)
    await sync.run()      # until cancelled; AgentEvictedError when the server refuses the agent
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from spiffe_agent.errors import AgentEvictedError
from spiffe_agent.manager.cache import SyncUpdate, WorkloadCache
from spiffe_agent.manager.client import ServerCallError, ServerClient
from spiffe_agent.manager.convert import ServerResponseError, sync_update_from_proto
from spiffe_agent.manager.identity import AgentIdentity
from spiffe_agent.manager.servers import ServerPool, display_address
from spiffe_agent.metrics import SYNC_ERRORS

log = logging.getLogger(__name__)

SYNC_QUIET = 0.2  # seconds without a sync message that end a burst
MAX_SYNC_BATCH = 10_000


async def _rest_of_snapshot(queue: asyncio.Queue[SyncUpdate | None], count: int) -> list[SyncUpdate | None]:
    """The messages after a full one that complete its snapshot: the ``count - 1`` the server counted,
    or (``count`` 0: an older server) those arriving before SYNC_QUIET passes without one. None ends the stream."""
    rest: list[SyncUpdate | None] = []
    limit = min(count, MAX_SYNC_BATCH) if count else MAX_SYNC_BATCH
    while len(rest) + 1 < limit and (not rest or rest[-1] is not None):
        try:
            rest.append(await (queue.get() if count else asyncio.wait_for(queue.get(), SYNC_QUIET)))
        except TimeoutError:
            break
    return rest


class SyncLoop:
    """Keeps ``cache`` in step with the server; ``on_change`` runs when the cache changed."""

    def __init__(self, servers: ServerPool, identity: AgentIdentity, cache: WorkloadCache, *,
                 on_change: Callable[[], None], resync_interval: float,
                 on_applied: Callable[[], None] = lambda: None) -> None:
        self._servers = servers
        self._identity = identity
        self._cache = cache
        self._on_change = on_change
        self._on_applied = on_applied  # after every batch: revocations may have changed without a view change
        self._resync_interval = resync_interval
        self._messages = 0
        self._broken = False  # the last stream failed: say when a new one works

    async def run(self) -> None:
        """Follow the sync stream, reconnecting (failing over to the next server) when it breaks."""
        while True:
            # new server trust anchors only apply to new connections
            self._identity.reconnect_if_trust_changed()
            client = self._servers.client()
            self._messages = 0
            try:
                # leaving the stream after resync_interval forces a fresh full state
                await asyncio.wait_for(self._consume(client), self._resync_interval)
            except TimeoutError:
                pass
            except (ServerCallError, ServerResponseError) as err:
                if isinstance(err, ServerCallError) and err.status == "PERMISSION_DENIED":
                    self._evicted(err)
                if isinstance(err, ServerCallError) and self._servers.replaced(client):
                    # a planned restart: the agent renewed its SVID (or took new trust anchors, or
                    # another task failed over) and closed this connection; the next one carries it
                    log.debug("sync stream restarted on a new connection to %s: %s",
                              display_address(self._servers.current), err)
                    continue
                self._broken = True
                SYNC_ERRORS.inc("stream")
                delay = self._servers.failed(client)
                log.warning("sync with server %s failed, retrying with %s in %.1fs: %s",
                            display_address(client.address), display_address(self._servers.current), delay, err)
                await asyncio.sleep(delay)

    async def _consume(self, client: ServerClient) -> None:
        queue: asyncio.Queue[SyncUpdate | None] = asyncio.Queue()  # None marks the end of the stream
        reader = asyncio.create_task(self._read(client, queue))
        try:
            while True:
                first = await queue.get()
                batch = [first]
                # a paged full sync arrives as a burst: apply the burst as one batch so
                # workloads never see (and SVIDs are never dropped for) a half-applied state.
                # Changes (full=False) are additive and applied at once: a revocation must not wait.
                if first is not None and first.full:
                    batch += await _rest_of_snapshot(queue, first.full_messages)
                self._apply([u for u in batch if u is not None])
                if batch[-1] is None:
                    await reader  # re-raises why the stream ended
                    return
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, client: ServerClient, queue: asyncio.Queue[SyncUpdate | None]) -> None:
        try:
            async for msg in client.sync_authorized():
                if not self._messages:
                    self._servers.succeeded()
                    if self._broken:
                        self._broken = False
                        log.info("syncing with server %s again", display_address(client.address))
                self._messages += 1
                queue.put_nowait(sync_update_from_proto(msg))
        finally:
            queue.put_nowait(None)

    def _evicted(self, err: ServerCallError) -> None:
        self._identity.forget()
        raise AgentEvictedError("agent: the server refused this agent (evicted or banned); attest again") from err

    def _apply(self, updates: list[SyncUpdate]) -> None:
        if not updates:
            return
        if self._cache.apply_sync(updates):
            self._on_change()
        self._on_applied()
        bundles = [u.bundle for u in updates if u.bundle is not None]
        if bundles:
            self._identity.update_trust(bundles[-1].x509_authorities)
