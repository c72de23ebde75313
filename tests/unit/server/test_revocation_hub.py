"""The revocation snapshot and operations over a real SQLite store and CA, with a manual clock (issue 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from spiffe_py.clock import ManualClock
from spiffe_py.errors import AuthorizationError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.context import ServerContext
from spiffe_server.api.revocations import revoke_own, revoke_svid
from spiffe_server.ca.keys import KeyType, MemoryKeyManager, generate_key
from spiffe_server.ca.manager import CaConfig, CaManager, MemoryJournalStore
from spiffe_server.ca.templates import X509SvidParams
from spiffe_server.config import AgentLimitsConfig, ServerConfig
from spiffe_server.datastore import LimitExceededError, open_datastore
from spiffe_server.errors import FailedPreconditionError
from spiffe_server.revocation import x509_issuance

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
WEB = SpiffeId.parse("spiffe://example.org/web")
AGENT = "spiffe://example.org/spire/agent/join_token/t"


def _ctx(tmp_path: Path) -> tuple[ServerContext, ManualClock]:
    clock = ManualClock(NOW)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock)
    return ServerContext(config=ServerConfig(trust_domain=TD), store=open_datastore(tmp_path / "db"), ca=ca,
                         clock=clock), clock


def _issue(ctx: ServerContext) -> x509.Certificate:
    leaf = ctx.ca.sign_x509_svid(X509SvidParams(spiffe_id=WEB, public_key=generate_key(KeyType.EC_P256).public_key(),
                                                ttl=timedelta(hours=1)))[0]
    ctx.store.record_issuances([x509_issuance(leaf, spiffe_id=str(WEB), agent_id=AGENT)])
    return leaf


async def test_snapshot_is_cached_resigned_at_half_life_and_pruned_at_expiry(tmp_path: Path) -> None:
    ctx, clock = _ctx(tmp_path)
    leaf = _issue(ctx)
    assert (await ctx.revocations.snapshot(ctx)).crls == ()
    await revoke_svid(ctx, serial=f"{leaf.serial_number:x}", jti=None, reason="leaked", actor="uid:0")
    snap = await ctx.revocations.snapshot(ctx)
    assert [(r.kind, r.value, r.reason) for r in snap.revocations] == [("x509", f"{leaf.serial_number:x}", "leaked")]
    (crl,) = [x509.load_der_x509_crl(d) for d in snap.crls]
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert await ctx.revocations.snapshot(ctx) is snap  # nothing changed: no re-signing
    clock.advance(timedelta(minutes=29))
    assert not await ctx.revocations.refresh(ctx)
    clock.advance(timedelta(minutes=2))  # past half of the CRL's one-hour validity
    assert await ctx.revocations.refresh(ctx)
    clock.advance(timedelta(hours=1))  # the SVID has expired: its revocation is no longer needed
    snap = await ctx.revocations.snapshot(ctx)
    assert snap.revocations == () and snap.crls == ()
    assert ctx.store.count_revocations() == 0  # pruned from the datastore too


async def test_revoke_refusals_change_nothing(tmp_path: Path) -> None:
    ctx, clock = _ctx(tmp_path)
    leaf = _issue(ctx)
    serial = f"{leaf.serial_number:x}"
    with pytest.raises(AuthorizationError, match=r"was not issued to 'spiffe://example\.org/spire/agent/other'"):
        await revoke_own(ctx, "spiffe://example.org/spire/agent/other", serials=[serial], jtis=[], reason="")
    with pytest.raises(AuthorizationError, match="jwt 'nope' was not issued to"):
        await revoke_own(ctx, AGENT, serials=[serial], jtis=["nope"], reason="")  # all or nothing
    assert ctx.store.count_revocations() == 0
    clock.advance(timedelta(hours=2))
    with pytest.raises(FailedPreconditionError, match="has already expired"):
        await revoke_svid(ctx, serial=serial, jti=None, reason="", actor="uid:0")
    assert ctx.store.count_revocations() == 0


async def test_agent_share_frees_up_as_revocations_expire_and_are_pruned(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock)
    config = ServerConfig(trust_domain=TD, agent_limits=AgentLimitsConfig(revocation_share=1))
    ctx = ServerContext(config=config, store=open_datastore(tmp_path / "db"), ca=ca, clock=clock)
    first, second = _issue(ctx), _issue(ctx)
    await revoke_own(ctx, AGENT, serials=[f"{first.serial_number:x}"], jtis=[], reason="exited")
    with pytest.raises(LimitExceededError, match="reserved for admins"):
        await revoke_own(ctx, AGENT, serials=[f"{second.serial_number:x}"], jtis=[], reason="exited")
    clock.advance(timedelta(minutes=59, seconds=59))  # both SVIDs live for an hour
    third = _issue(ctx)
    clock.advance(timedelta(seconds=2))  # the first revocation is no longer needed
    await ctx.revocations.snapshot(ctx)
    assert ctx.store.count_revocations() == 0  # pruned
    await revoke_own(ctx, AGENT, serials=[f"{third.serial_number:x}"], jtis=[], reason="exited")
    assert ctx.store.count_revocations() == 1
