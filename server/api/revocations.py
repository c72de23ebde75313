"""Revocation operations shared by the admin and agent APIs, and the cached revocation snapshot.

Every operation records revocations in the datastore (one transaction) and wakes every
SyncAuthorized stream, which then pushes :meth:`RevocationHub.snapshot`::

    revs = await revoke_svid(ctx, serial="3f0a...", jti=None, reason="leaked", actor="uid:0")
    snap = await ctx.revocations.snapshot(ctx)      # wire revocations + one DER CRL per CA
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509

from server.api.convert import ts
from server.api.errors import RequestError
from server.audit import Sealer
from server.datastore import Issuance, NotFoundError, Revocation, RevocationKind, RevocationRequest, RevokeResult
from server.errors import FailedPreconditionError
from server.revocation import (
    CRL_VALIDITY,
    build_crls,
    check_jti,
    check_reason,
    parse_serial,
    serial_hex,
    x509_issuance,
)
from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.audit import AuditEvent, build_event
from spiffe_py.errors import AuthorizationError

if TYPE_CHECKING:
    from server.api.context import ServerContext

log = logging.getLogger("spiffe_server.revocation")

MAX_REVOKE_OWN = 1000
PRUNE_INTERVAL = timedelta(minutes=1)
WIRE_KIND = {RevocationKind.SERIAL: "x509", RevocationKind.JTI: "jwt"}


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

    async def snapshot(self, ctx: ServerContext) -> RevocationSnapshot:
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

    async def refresh(self, ctx: ServerContext) -> bool:
        """Rebuild if due; True when the CRL set changed (streams then need a push)."""
        before = self._snapshot.crls
        return (await self.snapshot(ctx)).crls != before

    async def _prune(self, ctx: ServerContext, now: datetime) -> None:
        self._prune_at = now + PRUNE_INTERVAL
        pruned = await ctx.call(ctx.store.prune_revocations, now=now)
        await ctx.call(ctx.store.prune_issuances, now=now)
        if pruned:
            log.info("expired revocations pruned", extra={"count": pruned})


class X509IssuanceLog:
    """Issuance records of one batch's X.509-SVIDs, from the signed objects (no DER re-parse).

    Every leaf a CA signs carries the same authority key ID, so it is read from the first leaf
    of each signing CA only.
    """

    def __init__(self, *, agent_id: str) -> None:
        self.agent_id = agent_id
        self._issuers: dict[int, tuple[x509.Certificate, str]] = {}

    def issuance(self, chain: Sequence[x509.Certificate], *, spiffe_id: str, entry_id: str) -> Issuance:
        """The record of ``chain`` (leaf first, then its signing CA) signed for ``entry_id``."""
        leaf = chain[0]
        ca = chain[1] if len(chain) > 1 else None
        # Keyed by id() with the certificate kept alive alongside, so a reused id cannot match.
        known = None if ca is None else self._issuers.get(id(ca))
        if known is not None and known[0] is ca:
            return Issuance(kind=RevocationKind.SERIAL, value=serial_hex(leaf.serial_number), spiffe_id=spiffe_id,
                            expires_at=leaf.not_valid_after_utc, entry_id=entry_id, agent_id=self.agent_id,
                            issuer=known[1])
        item = x509_issuance(leaf, spiffe_id=spiffe_id, entry_id=entry_id, agent_id=self.agent_id)
        if ca is not None:
            self._issuers[id(ca)] = (ca, item.issuer)
        return item


MAX_LISTED = 100  # serials (or jtis) a revocation's audit record lists in full; beyond, a count and digest


def values_digest(values: Iterable[str]) -> str:
    """SHA-256 (hex) of the sorted values joined by newlines: recomputable from ``revocation list``."""
    return hashlib.sha256("\n".join(sorted(values)).encode()).hexdigest()


def revocation_details(what: str, revs: Sequence[Revocation], **extra: Any) -> dict[str, Any]:
    """The audit details of one revocation: per kind a count and digest, and the values when few.

    Bounded whatever the number revoked, so the record always fits the audit chain's limit.
    """
    details: dict[str, Any] = {"what": what, **extra}
    for kind, name in ((RevocationKind.SERIAL, "serial"), (RevocationKind.JTI, "jti")):
        values = sorted(r.value for r in revs if r.kind is kind)
        details[f"{name}_count"] = len(values)
        details[f"{name}s_sha256"] = values_digest(values)
        if len(values) <= MAX_LISTED:
            details[f"{name}s"] = values
    return details


async def _commit(ctx: ServerContext, request: RevocationRequest, *, what: str, actor: str,
                  **extra: Any) -> tuple[Revocation, ...]:
    """Store the revocations, the eviction or deletion and the audit record in one transaction."""

    def events(revs: Sequence[Revocation]) -> list[AuditEvent]:
        ids = {r.spiffe_id for r in revs}
        return [build_event(now=request.now, actor=actor, spiffe_id=ids.pop() if len(ids) == 1 else None,
                            selectors=(), decision="allow", reason=f"revoked: {request.reason}", method="Revoke",
                            details=revocation_details(what, revs, **extra))]

    def write(seal: Sealer) -> RevokeResult:
        return ctx.store.revoke(request, lambda revs: seal(events(revs)))

    result: RevokeResult = await ctx.call(ctx.guard.audit.append_in, write, lambda r: r.audit)
    ctx.changes.notify()
    log.info("svids revoked", extra={"what": what, "count": len(result.added), "reason": request.reason})
    return result.added


async def _issued(ctx: ServerContext, kind: RevocationKind, value: str) -> Issuance | None:
    try:
        return await ctx.call(ctx.store.get_issuance, kind, value)
    except NotFoundError:
        return None


def _parse(serial: str | None, jti: str | None) -> tuple[RevocationKind, str]:
    if serial is not None:
        return RevocationKind.SERIAL, parse_serial(serial)
    return RevocationKind.JTI, check_jti(jti or "")


async def revoke_svid(ctx: ServerContext, *, serial: str | None, jti: str | None,
                      reason: str, actor: str) -> tuple[Revocation, ...]:
    """Revoke one SVID by X.509 serial or JWT ID; NotFoundError if the server never issued it."""
    check_reason(reason)
    kind, value = _parse(serial, jti)
    item = await _issued(ctx, kind, value)
    if item is None:
        label = "x509 serial" if kind is RevocationKind.SERIAL else "jwt jti"
        raise NotFoundError(f"revocation: no svid with {label} {value!r} was issued by this server")
    now = ctx.clock.now()
    if item.expires_at <= now:
        raise FailedPreconditionError(f"revocation: svid {value!r} has already expired")
    return await _commit(ctx, RevocationRequest(reason=reason, now=now, items=(item,)),
                         what=f"{kind.value} {value}", actor=actor)


async def revoke_entry(ctx: ServerContext, entry_id: str, *, reason: str,
                       delete: bool, actor: str) -> tuple[Revocation, ...]:
    """Revoke every unexpired SVID issued under the entry (NotFoundError if unknown); optionally delete it.

    Never refused for the revocation list's size: admins and quarantines always get through.
    """
    check_reason(reason)
    request = RevocationRequest(reason=reason, now=ctx.clock.now(), entry_id=entry_id, delete_entry=delete)
    return await _commit(ctx, request, what=f"entry {entry_id}", actor=actor, deleted=delete)


async def revoke_agent(ctx: ServerContext, agent_id: str, *, reason: str, actor: str) -> tuple[Revocation, ...]:
    """Evict the agent (NotFoundError if unknown) and revoke every unexpired SVID issued to it, however many."""
    check_reason(reason)
    request = RevocationRequest(reason=reason, now=ctx.clock.now(), agent_id=agent_id, evict_agent=True)
    # the eviction ends its SyncAuthorized stream at the next wake
    return await _commit(ctx, request, what=f"agent {agent_id}", actor=actor, evicted=True)


async def revoke_own(ctx: ServerContext, agent_id: str, *, serials: Sequence[str], jtis: Sequence[str],
                     reason: str) -> tuple[Revocation, ...]:
    """Revoke SVIDs the caller holds; all or nothing, PERMISSION_DENIED for any not issued to it.

    Throttled per agent (RESOURCE_EXHAUSTED): a rate, a quota of unexpired revocations of its
    SVIDs, and the agents' share of the revocation list (the rest is kept for admins).
    """
    if not 0 < len(serials) + len(jtis) <= MAX_REVOKE_OWN:
        raise RequestError("x509_serials", f"1..{MAX_REVOKE_OWN} serials and jtis in all are required")
    check_reason(reason)
    wanted = [_parse(s, None) for s in serials] + [_parse(None, j) for j in jtis]
    now = ctx.clock.now()
    ctx.revoke_limiter.take(agent_id, len(wanted), now=now)
    items = []
    for kind, value in wanted:
        item = await _issued(ctx, kind, value)
        if item is None or item.agent_id != agent_id:
            raise AuthorizationError(f"revocation: {WIRE_KIND[kind]} {value!r} was not issued to {agent_id!r}")
        items.append(item)
    limits = ctx.config.agent_limits
    request = RevocationRequest(reason=reason, now=now, items=tuple(items), limit=limits.revocation_share,
                                quota_agent=agent_id, agent_quota=limits.revoke_quota)
    return await _commit(ctx, request, what=f"own svids of {agent_id}", actor=agent_id)
