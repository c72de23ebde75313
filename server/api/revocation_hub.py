"""The cached revocation snapshot every SyncAuthorized stream and the bundle endpoint push.

Rebuilt when a revocation is added, the CA set changes, and at CRL half-life::

    snap = await ctx.revocations.snapshot(ctx)      # wire revocations + one DER CRL per CA
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.clock import Clock
from spiffe_server.api.convert import ts
from spiffe_server.ca.manager import CaManager
from spiffe_server.datastore import DataStore, Revocation, RevocationKind
from spiffe_server.revocation import CRL_VALIDITY, build_crls

log = logging.getLogger("spiffe_server.revocation")

PRUNE_INTERVAL = timedelta(minutes=1)
WIRE_KIND = {RevocationKind.SERIAL: "x509", RevocationKind.JTI: "jwt"}

T = TypeVar("T")


class HubContext(Protocol):
    """What the hub reads from the server context (server.api.context.ServerContext)."""

    @property
    def clock(self) -> Clock:
        """The injected clock."""
        ...

    @property
    def ca(self) -> CaManager:
        """The CA set whose CRLs are built."""
        ...

    @property
    def store(self) -> DataStore:
        """Where revocations are kept."""
        ...

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking datastore/CA call off the event loop."""
        ...


def revocation_to_proto(rev: Revocation) -> types_pb2.Revocation:
    """A revocation on the wire (kind "x509" with a hex serial, or "jwt" with a jti)."""
    return types_pb2.Revocation(kind=WIRE_KIND[rev.kind], value=rev.value, spiffe_id=rev.spiffe_id,
                                entry_id=rev.entry_id, agent_id=rev.agent_id, reason=rev.reason,
                                revoked_at=ts(rev.revoked_at), expires_at=ts(rev.expires_at))


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    """Every unexpired revocation (wire form) and the current DER CRL set."""

    revocations: tuple[types_pb2.Revocation, ...] = ()
    crls: tuple[bytes, ...] = ()


class RevocationHub:
    """Caches the snapshot: rebuilt when a revocation is added, the CA set changes, and at CRL half-life."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._key: tuple[object, ...] | None = None
        self._refresh_at: datetime | None = None
        self._prune_at: datetime | None = None
        self._snapshot = RevocationSnapshot()

    async def snapshot(self, ctx: HubContext) -> RevocationSnapshot:
        """The current snapshot (one rebuild however many streams ask at once)."""
        async with self._lock:
            now = ctx.clock.now()
            signers = ctx.ca.x509_signers()
            key = (await ctx.call(ctx.store.revocation_seq), tuple(s.authority_id for s in signers))
            if key == self._key and self._refresh_at is not None and now < self._refresh_at:
                return self._snapshot
            if self._prune_at is None or now >= self._prune_at:
                await self._prune(ctx, now)
            revs = await ctx.call(ctx.store.list_revocations, now=now)
            number = int(now.timestamp() * 1_000_000)  # increases across restarts and servers (RFC 5280 §5.2.3)
            crls = await ctx.call(build_crls, revs, signers, now=now, number=number)
            self._snapshot = RevocationSnapshot(tuple(revocation_to_proto(r) for r in revs), crls)
            self._key, self._refresh_at = key, now + CRL_VALIDITY / 2
            return self._snapshot

    async def refresh(self, ctx: HubContext) -> bool:
        """Rebuild if due; True when the CRL set changed (streams then need a push)."""
        before = self._snapshot.crls
        return (await self.snapshot(ctx)).crls != before

    async def _prune(self, ctx: HubContext, now: datetime) -> None:
        self._prune_at = now + PRUNE_INTERVAL
        pruned = await ctx.call(ctx.store.prune_revocations, now=now)
        await ctx.call(ctx.store.prune_issuances, now=now)
        if pruned:
            log.info("expired revocations pruned", extra={"count": pruned})
