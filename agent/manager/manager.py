"""The agent manager: the parts below composed, and the workload-facing views and subscriptions.

Parts, one per concern: :class:`~agent.manager.identity.AgentIdentity` (node attestation,
renewal, re-attestation), :class:`~agent.manager.sync.SyncLoop` (the server's SyncAuthorized
stream into the cache), :class:`~agent.manager.mint.Minter` (X509 CSR batches, JWT-SVIDs),
:class:`~agent.manager.bound.BoundProcesses` (``--bind-to-process`` callers and RevokeOwn), all
talking to one server at a time through :class:`~agent.manager.servers.ServerPool`::

    manager = Manager(config, clock=SystemClock())
    await manager.start()                       # load the stored identity or attest with the node attestor
    async with asyncio.TaskGroup() as tg:
        tg.create_task(manager.run())
        ...
    async with manager.subscribe(selectors) as sub:
        view = await sub.next()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from prometheus_client import Gauge

from spiffe_agent.errors import AgentEvictedError, NoIdentityIssuedError, NotReadyError
from spiffe_agent.manager.bound import BoundProcesses
from spiffe_agent.manager.cache import (
    DEFAULT_MAX_X509_SVIDS,
    Entry,
    JwtToken,
    RevocationState,
    WorkloadCache,
    WorkloadView,
    expired_svid_error,
)
from spiffe_agent.manager.client import ServerClient
from spiffe_agent.manager.identity import AgentIdentity
from spiffe_agent.manager.mint import Interest, Minter
from spiffe_agent.manager.process_binding import AuditSink, ProcessKey
from spiffe_agent.manager.servers import ServerPool, display_address
from spiffe_agent.manager.sync import SyncLoop
from spiffe_agent.nodeattest.base import NodeAttestorClient
from spiffe_py.clock import Clock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain

log = logging.getLogger(__name__)

X509_SVIDS_CACHED = Gauge("spiffe_agent_x509_svids_cached", "Shared X.509-SVIDs the agent holds")
X509_SVID_ENTRIES = Gauge("spiffe_agent_x509_svid_entries", "Authorized entries that get a shared X.509-SVID")
X509_SVID_LIMIT = Gauge("spiffe_agent_x509_svid_cache_limit", "max_x509_svids: shared X.509-SVIDs kept and prefetched")
X509_SVID_CACHE_OVER_LIMIT = Gauge(
    "spiffe_agent_x509_svid_cache_over_limit",
    "1 while more entries are authorized than max_x509_svids (those beyond are signed on demand)")


@dataclass(frozen=True, slots=True)
class ManagerConfig:
    """What the manager needs to reach and trust the servers (``servers``: (host, port), in order of preference)."""

    trust_domain: TrustDomain
    servers: tuple[tuple[str, int], ...]
    data_dir: Path
    node_attestor: NodeAttestorClient | None = None  # None: only a stored identity can be used
    bootstrap_bundle: tuple[x509.Certificate, ...] = ()
    insecure_bootstrap: bool = False
    resync_interval: float = 60.0
    rotation_tick: float = 5.0
    max_x509_svids: int = DEFAULT_MAX_X509_SVIDS

    def __repr__(self) -> str:
        servers = ",".join(display_address(a) for a in self.servers)
        return f"ManagerConfig(trust_domain={self.trust_domain.name!r}, servers={servers})"


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """The readiness checks (each ``"ok"`` or why not) and the expiries behind them."""

    checks: Mapping[str, str]
    agent_svid_not_after: datetime | None
    cached_svids: int
    earliest_cached_not_after: datetime | None
    expired_cached_svids: int

    @property
    def ready(self) -> bool:
        """True when every check passed."""
        return all(v == "ok" for v in self.checks.values())


def _rfc3339(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


class Subscription:
    """One open Workload API stream's interest in the cache (an async context manager: registered inside it)."""

    def __init__(self, manager: Manager, selectors: frozenset[Selector], process: ProcessKey | None = None, *,
                 svids: bool = False) -> None:
        self.selectors = selectors
        self.process = process  # the caller, for --bind-to-process entries
        self._manager = manager
        self._svids = svids  # the stream serves X509-SVIDs: an expired one ends it (ExpiredSvidError)
        self._changed = asyncio.Event()
        self._changed.set()  # the first view is due immediately (WA-06)
        self._pinned: list[str] = []
        self._expires: datetime | None = None  # when the first SVID of the last view expires

    def notify(self) -> None:
        """Wake the stream."""
        self._changed.set()

    async def next(self) -> WorkloadView:
        """Wait for a change (or the expiry of an SVID it served), then return the current view.

        Raises:
            ExpiredSvidError: with ``svids``, an SVID of the view has expired (it was not renewed in time).
        """
        timeout = None if self._expires is None else self._manager.seconds_until(self._expires)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
        self._changed.clear()
        view = self._manager.view(self.selectors, self.process)
        self._repin([i.entry.id for i in view.identities])
        if self._svids:
            self._manager.check_unexpired(view)
            self._expires = min((svid.not_after for _, svid in view.svids()), default=None)
        return view

    def _repin(self, entry_ids: list[str]) -> None:
        self._manager.cache.pin(entry_ids)
        self._manager.cache.unpin(self._pinned)
        self._pinned = entry_ids

    async def __aenter__(self) -> Subscription:
        self._manager._subscribed(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._manager._unsubscribed(self)
        self.close()

    def close(self) -> None:
        """Release pins."""
        self._repin([])


class RevocationSubscription:
    """A revocation watcher's interest (an async context manager): :meth:`next` returns the state after a change."""

    def __init__(self, manager: Manager) -> None:
        self._manager = manager
        self._changed = asyncio.Event()
        self._changed.set()  # the current state is due immediately

    def notify(self) -> None:
        """Wake the watcher."""
        self._changed.set()

    async def next(self) -> RevocationState:
        """Wait for a possible change, then return the current state (NotReadyError before the first sync)."""
        await self._changed.wait()
        self._changed.clear()
        if not self._manager.cache.ready:
            raise NotReadyError("agent: not synced with the server yet")
        return self._manager.cache.revocation_state()

    async def __aenter__(self) -> RevocationSubscription:
        self._manager._revocation_watchers.add(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._manager._revocation_watchers.discard(self)


class Manager:
    """Composes identity, sync, minting and bound processes around one workload cache."""

    def __init__(
        self, config: ManagerConfig, *, clock: Clock, rng: random.Random | None = None, audit: AuditSink | None = None
    ) -> None:
        self.config = config
        self._clock = clock
        self.cache = WorkloadCache(max_x509_svids=config.max_x509_svids)
        rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._subs: set[Subscription] = set()
        self._revocation_watchers: set[RevocationSubscription] = set()
        self._mint_kick = asyncio.Event()
        self.servers = ServerPool(config.servers, config.trust_domain, rng=rng)
        self.identity = AgentIdentity(
            self.servers, trust_domain=config.trust_domain, data_dir=config.data_dir,
            node_attestor=config.node_attestor, clock=clock, rng=rng, bootstrap_bundle=config.bootstrap_bundle,
            insecure_bootstrap=config.insecure_bootstrap)
        self.bound = BoundProcesses(self.cache, self.servers, clock=clock, actor=self.identity.actor, audit=audit,
                                    on_change=self._released, on_admit=self._mint_kick.set)
        self.minter = Minter(self.cache, self.servers, self.bound, kick=self._mint_kick, clock=clock, rng=rng,
                             rotation_tick=config.rotation_tick, interests=self._interests, on_change=self._notify)
        self.sync = SyncLoop(self.servers, self.identity, self.cache, on_change=self._changed,
                             resync_interval=config.resync_interval, on_applied=self._revocations_changed)
        self._over_limit = False
        X509_SVIDS_CACHED.set_function(self.cache.svid_count)
        X509_SVID_ENTRIES.set_function(self.cache.shared_entry_count)
        X509_SVID_LIMIT.set(self.cache.max_x509_svids)

    # ---- workload-facing -------------------------------------------------
    def view(self, selectors: frozenset[Selector], process: ProcessKey | None = None) -> WorkloadView:
        """Current view for a workload (``process``: the caller, for bound entries); NotReadyError before sync."""
        if not self.cache.ready:
            raise NotReadyError("agent: not synced with the server yet")
        self.minter.expire()
        if process is not None and any(e.bind_to_process for e in self.cache.matching(selectors)):
            self.bound.bind(process)
        return self.cache.view(selectors, process)

    def subscribe(self, selectors: frozenset[Selector], process: ProcessKey | None = None, *,
                  svids: bool = False) -> Subscription:
        """Interest in ``selectors`` of the caller ``process`` while ``async with`` it lasts; SVIDs minted first.

        With ``svids`` (a stream that serves X509-SVIDs), a view holding an expired SVID raises
        ExpiredSvidError instead of being returned, also on an open stream when that SVID expires.
        """
        return Subscription(self, selectors, process, svids=svids)

    def seconds_until(self, when: datetime) -> float:
        """Seconds from now until ``when`` (0 when past)."""
        return max(0.0, (when - self._clock.now()).total_seconds())

    def check_unexpired(self, view: WorkloadView) -> None:
        """Raise ExpiredSvidError when an SVID of ``view`` has expired: it must not be served."""
        state = self.identity.state
        agent_not_after = None if state is None else state.not_after
        err = expired_svid_error(view, now=self._clock.now(), agent_not_after=agent_not_after)
        if err is not None:
            raise err

    def health(self) -> AgentHealth:
        """The readiness checks: own SVID valid, synced, no cached SVID expired (read now)."""
        now = self._clock.now()
        state = self.identity.state
        svids = self.cache.cached_svids()
        expired = [s for s in svids if s.not_after <= now]
        checks = {
            "agent_svid": "not attested yet" if state is None else (
                f"expired at {_rfc3339(state.not_after)}" if state.not_after <= now else "ok"),
            "sync": "ok" if self.cache.ready else "not synced with the server yet",
            "svids": "ok" if not expired else (
                f"{len(expired)} cached X509-SVID(s) expired, the first at "
                f"{_rfc3339(min(s.not_after for s in expired))}; the agent could not renew them"),
        }
        return AgentHealth(
            checks=checks,
            agent_svid_not_after=None if state is None else state.not_after,
            cached_svids=len(svids),
            earliest_cached_not_after=min((s.not_after for s in svids), default=None),
            expired_cached_svids=len(expired),
        )

    def _subscribed(self, sub: Subscription) -> None:
        self._subs.add(sub)
        if not self._minted(sub.selectors):
            self._mint_kick.set()

    def _unsubscribed(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    def _interests(self) -> list[Interest]:
        return [(s.selectors, s.process) for s in self._subs]

    def _minted(self, selectors: frozenset[Selector]) -> bool:
        """True when every identity of ``selectors`` has a shared SVID: the mint loop has nothing new to do.

        Rotation of those SVIDs stays with the mint loop's own timer; bound entries always kick it.
        """
        return self.cache.ready and all(
            not e.bind_to_process and self.cache.has_svid(e.id) for e in self.cache.matching(selectors)
        )

    def jwt_entries(self, selectors: frozenset[Selector], spiffe_id: SpiffeId | None = None,
                    process: ProcessKey | None = None) -> list[Entry]:
        """The entries a JWT-SVID can be minted for: the caller's (only ``spiffe_id``'s), bound ones with a ``process``.

        Raises:
            NotReadyError: before the first sync.
            NoIdentityIssuedError: none.
        """
        if not self.cache.ready:
            raise NotReadyError("agent: not synced with the server yet")
        self.minter.expire()
        with_process = process is not None
        entries = [
            e
            for e in self.cache.matching(selectors)
            if (spiffe_id is None or e.spiffe_id == spiffe_id) and (with_process or not e.bind_to_process)
        ]
        if not entries:
            raise NoIdentityIssuedError("no identity issued")
        return entries

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str],
                        process: ProcessKey | None = None) -> list[tuple[Entry, JwtToken]]:
        """A JWT-SVID for each of ``entries`` (from :meth:`jwt_entries`) for ``process``, cached until half-life."""
        return await self.minter.jwt_svids(entries, audience, process)

    def _notify(self) -> None:
        for sub in self._subs:
            sub.notify()

    def watch_revocations(self) -> RevocationSubscription:
        """Interest in the revocation state while ``async with`` it lasts (the agent's revocation watch service)."""
        return RevocationSubscription(self)

    def _revocations_changed(self) -> None:
        for watcher in self._revocation_watchers:
            watcher.notify()

    def _released(self) -> None:
        # a bound process exited: its credentials are revoked here at once
        self._notify()
        self._revocations_changed()

    def _changed(self) -> None:
        self._mint_kick.set()
        self._notify()
        self._check_cache_limit()

    def _check_cache_limit(self) -> None:
        """Say (log line and metric) when more entries match this agent than ``max_x509_svids``.

        Nothing stops: SVIDs beyond the limit are signed on demand for the workloads that connect,
        and the least recently used unpinned ones are dropped (SPIRE's LRU cache does the same).
        """
        entries, limit = self.cache.shared_entry_count(), self.cache.max_x509_svids
        over = entries > limit
        X509_SVID_CACHE_OVER_LIMIT.set(1 if over else 0)
        if over and not self._over_limit:
            log.warning("agent: %d entries are authorized for this agent, more than max_x509_svids (%d): X.509-SVIDs "
                        "beyond the limit are signed on demand when a workload connects, least recently used ones "
                        "are dropped", entries, limit)
        elif self._over_limit and not over:
            log.info("agent: %d authorized entries fit max_x509_svids (%d) again", entries, limit)
        self._over_limit = over

    # ---- server ------------------------------------------------------------
    def server_client(self) -> ServerClient:
        """The connection to the current server (NotReadyError before attestation)."""
        return self.servers.client()

    async def start(self) -> None:
        """Load the stored agent identity, or attest (retrying, over every server, while they are unreachable)."""
        await self.identity.start()

    async def run(self) -> None:
        """Run sync, minting and agent rotation until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.sync.run())
                tg.create_task(self.minter.run())
                tg.create_task(self.identity.rotate_loop(self.config.rotation_tick))
        except ExceptionGroup as group:
            evicted = [e for e in group.exceptions if isinstance(e, AgentEvictedError)]
            if evicted:
                raise evicted[0] from None
            raise
