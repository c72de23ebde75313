"""Minting workload SVIDs: X509-SVIDs in CSR batches on a loop, JWT-SVIDs on demand (async shell).

::

    minter = Minter(cache, servers, bound, kick=event, clock=clock, rng=rng, rotation_tick=5.0,
                    interests=lambda: [(selectors, process), ...], on_change=notify)
    await minter.run()                                        # mint and rotate until cancelled
    tokens = await minter.jwt_svids(entries, ["aud"], process)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_agent.errors import NoIdentityIssuedError
from spiffe_agent.manager.bound import BoundProcesses
from spiffe_agent.manager.cache import Entry, JwtToken, WorkloadCache
from spiffe_agent.manager.client import ServerCallError
from spiffe_agent.manager.convert import ServerResponseError, issued_svid, jws_key_id
from spiffe_agent.manager.identity import build_csr, new_key
from spiffe_agent.manager.process_binding import ProcessKey, Released
from spiffe_agent.manager.servers import ServerPool
from spiffe_agent.metrics import SYNC_ERRORS
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError
from spiffe_py.selectors import Selector

log = logging.getLogger(__name__)

CSR_BATCH = 500  # SPIRE's batch limit
MINT_IN_FLIGHT = 2  # CSR batches at the server at once: the agent builds the next while the server signs
MAX_JWT_BYTES = 64 * 1024
JITTER = 0.1  # rotate within ±10% of half-life, like SPIRE

Interest = tuple[frozenset[Selector], ProcessKey | None]
Target = tuple[Entry, ProcessKey | None]  # an entry to mint for, and the process for a bound one


@dataclass(frozen=True, slots=True)
class CsrBatch:
    """One BatchNewX509SVID request: a fresh key and CSR per target, in target order."""

    targets: list[Target]
    keys: list[ec.EllipticCurvePrivateKey]
    params: list[agent_pb2.NewX509SVIDParams]


def csr_batch(targets: list[Target]) -> CsrBatch:
    """Keys and CSRs for ``targets`` (CPU-bound: run in a worker thread, off the event loop)."""
    keys = [new_key() for _ in targets]
    params = [
        agent_pb2.NewX509SVIDParams(entry_id=e.id, csr=build_csr(k, e.spiffe_id))
        for (e, _), k in zip(targets, keys, strict=True)
    ]
    return CsrBatch(targets, keys, params)


InFlight = deque[tuple[CsrBatch, asyncio.Task[list[agent_pb2.X509SVIDResult]]]]  # oldest first


class Minter:
    """Keeps the SVIDs of the open streams' identities fresh, and mints JWT-SVIDs.

    ``interests`` lists what open streams ask for (selectors, and the caller's process for
    bound entries); ``kick`` wakes the loop early; ``on_change`` runs after SVIDs changed.
    """

    def __init__(self, cache: WorkloadCache, servers: ServerPool, bound: BoundProcesses, *, kick: asyncio.Event,
                 clock: Clock, rng: random.Random, rotation_tick: float, interests: Callable[[], list[Interest]],
                 on_change: Callable[[], None]) -> None:
        self._cache = cache
        self._servers = servers
        self._bound = bound
        self._kick = kick
        self._clock = clock
        self._rng = rng
        self._tick = rotation_tick
        self._interests = interests
        self._on_change = on_change

    def expire(self) -> None:
        """Drop entries whose task ended (--expires-at / --max-lifetime) and wake their streams."""
        if self._cache.drop_expired(now=self._clock.now()):
            self._on_change()

    def _wait(self) -> float:
        """Seconds until the loop must look again: the rotation tick, or sooner if an entry expires."""
        end = self._cache.next_expiry()
        if not end:
            return self._tick
        return max(0.0, min(self._tick, end - self._clock.now().timestamp()))

    def _jitter(self) -> float:
        return self._rng.uniform(-JITTER, JITTER)

    async def run(self) -> None:
        """Mint what is missing or due for rotation, whenever kicked or every tick, until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._wait())
            self._kick.clear()
            if not self._cache.ready:
                continue
            self.expire()
            now = self._clock.now()
            interests = self._interests()
            targets: list[Target] = [
                (e, None) for e in self._cache.svid_targets([s for s, _ in interests], now=now, jitter=self._jitter())
            ]
            bound = [(s, p) for s, p in interests if p is not None]
            targets += self._cache.bound_targets(bound, now=now, jitter=self._jitter())
            try:
                await self._mint(targets)
            except ServerCallError as err:
                SYNC_ERRORS.inc("mint")
                log.warning("minting workload svids failed: %s", err)

    async def _mint(self, targets: list[Target]) -> None:
        """Mint one SVID per target in CSR_BATCH batches; a bound entry appears once per process, each with its own key.

        Pipelined: each batch's keys and CSRs are built in a worker thread while up to
        MINT_IN_FLIGHT earlier batches are at the server, and results are stored in batch order.
        A failed call ends the round (what is left is retried on the next one): batches still in
        flight are cancelled.
        """
        in_flight: InFlight = deque()
        try:
            for i in range(0, len(targets), CSR_BATCH):
                batch = await asyncio.to_thread(csr_batch, targets[i : i + CSR_BATCH])
                if len(in_flight) == MINT_IN_FLIGHT:
                    await self._store_oldest(in_flight)
                in_flight.append((batch, asyncio.create_task(self._sign(batch))))
            while in_flight:
                await self._store_oldest(in_flight)
        finally:
            for _, call in in_flight:
                call.cancel()
            await asyncio.gather(*(call for _, call in in_flight), return_exceptions=True)

    async def _sign(self, batch: CsrBatch) -> list[agent_pb2.X509SVIDResult]:
        return await self._servers.call(lambda client: client.batch_new_x509(batch.params))

    async def _store_oldest(self, in_flight: InFlight) -> None:
        """Wait for the oldest batch in flight, then check and cache its SVIDs (refusals and rejections per entry)."""
        batch, call = in_flight[0]
        results = await call
        in_flight.popleft()
        # results come back in request order (the same entry may appear for several processes)
        for (entry, process), key, r in zip(batch.targets, batch.keys, results, strict=False):
            if r.entry_id != entry.id:
                continue
            if r.status_code != 0:
                log.warning("server refused svid for entry %s: %s", r.entry_id, r.status_message[:200])
                self._cache.mark_refused(r.entry_id, now=self._clock.now())
                continue
            try:
                svid = issued_svid(entry, list(r.cert_chain), key)
            except SpiffeError as err:
                log.warning("rejected svid for entry %s: %s", r.entry_id, err)
                continue
            if process is None:
                self._cache.put_svid(svid)
            elif not self._cache.bound.put_svid(process, svid):
                # the process exited while its SVID was minted: revoke it rather than leave it valid
                self._bound.revoke(Released(process, (f"{svid.serial:x}",), ()))
        self._on_change()

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str],
                        process: ProcessKey | None = None) -> list[tuple[Entry, JwtToken]]:
        """A JWT-SVID for each of ``entries`` for ``process``, cached until half-life."""
        return [(e, await self._jwt_for(e, audience, process)) for e in entries]

    async def _jwt_for(self, entry: Entry, audience: Sequence[str], process: ProcessKey | None) -> JwtToken:
        if process is None or not entry.bind_to_process:
            return await self._shared_jwt(entry, audience)
        self._bound.bind(process)
        token = self._cache.bound.jwt(process, entry.id, audience, now=self._clock.now())
        if token is None:
            token = await self._new_jwt(entry, audience)
            if not self._cache.bound.put_jwt(process, entry.id, token):
                # the process exited while the token was minted: it must not outlive it
                self._bound.revoke(Released(process, (), (token.jti,)))
                raise NoIdentityIssuedError("no identity issued")
        return token

    async def _shared_jwt(self, entry: Entry, audience: Sequence[str]) -> JwtToken:
        cached = self._cache.get_jwt(entry.spiffe_id, audience, now=self._clock.now())
        if cached is not None:
            return cached
        token = await self._new_jwt(entry, audience)
        self._cache.put_jwt(token)
        return token

    async def _new_jwt(self, entry: Entry, audience: Sequence[str]) -> JwtToken:
        resp = await self._servers.call(lambda client: client.new_jwt(entry.id, audience))
        if not resp.token or len(resp.token) > MAX_JWT_BYTES or resp.expires_at <= resp.issued_at:
            raise ServerResponseError(f"jwt: server sent an unusable jwt-svid for entry {entry.id!r}")
        return JwtToken(
            token=resp.token,
            spiffe_id=entry.spiffe_id,
            audience=tuple(audience),
            issued_at=datetime.fromtimestamp(resp.issued_at, UTC),
            expires_at=datetime.fromtimestamp(resp.expires_at, UTC),
            jti=resp.jti,
            kid=jws_key_id(resp.token),
        )
