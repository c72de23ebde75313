"""Revocation operations shared by the admin and agent APIs.

Every operation records revocations in the datastore (one transaction) and wakes every
SyncAuthorized stream, which then pushes the snapshot of server.api.revocation_hub::

    revs = await revoke_svid(ctx, serial="3f0a...", jti=None, reason="leaked", actor="uid:0")
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography import x509

from spiffe_py._memo import Identity, Memo
from spiffe_py.audit import AuditEvent, build_event
from spiffe_py.errors import AuthorizationError
from spiffe_server.api.errors import RequestError
from spiffe_server.api.revocation_hub import WIRE_KIND
from spiffe_server.audit import Sealer
from spiffe_server.datastore import Issuance, NotFoundError, Revocation, RevocationKind, RevocationRequest, RevokeResult
from spiffe_server.errors import FailedPreconditionError
from spiffe_server.revocation import (
    check_jti,
    check_reason,
    parse_serial,
    serial_hex,
    x509_issuance,
)

if TYPE_CHECKING:
    from spiffe_server.api.context import ServerContext

log = logging.getLogger("spiffe_server.revocation")

MAX_REVOKE_OWN = 1000
MAX_ISSUERS = 8  # signing CAs of one batch: the active one, and the previous one while it rotates


class X509IssuanceLog:
    """Issuance records of one batch's X.509-SVIDs, from the signed objects (no DER re-parse).

    Every leaf a CA signs carries the same authority key ID, so it is read from the first leaf
    of each signing CA only.
    """

    def __init__(self, *, agent_id: str) -> None:
        self.agent_id = agent_id
        self._issuers: Memo[Identity, str] = Memo(max_size=MAX_ISSUERS)

    def issuance(self, chain: Sequence[x509.Certificate], *, spiffe_id: str, entry_id: str) -> Issuance:
        """The record of ``chain`` (leaf first, then its signing CA) signed for ``entry_id``."""
        leaf = chain[0]
        ca = chain[1] if len(chain) > 1 else None
        issuer = None if ca is None else self._issuers.get(Identity(ca))
        if issuer is not None:
            return Issuance(kind=RevocationKind.SERIAL, value=serial_hex(leaf.serial_number), spiffe_id=spiffe_id,
                            expires_at=leaf.not_valid_after_utc, entry_id=entry_id, agent_id=self.agent_id,
                            issuer=issuer)
        item = x509_issuance(leaf, spiffe_id=spiffe_id, entry_id=entry_id, agent_id=self.agent_id)
        if ca is not None:
            self._issuers.put(Identity(ca), item.issuer)
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
