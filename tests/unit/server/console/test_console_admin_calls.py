"""Console calls through the admin service (LocalCall): roles, approvals, label expiry, audit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py.clock import ManualClock
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.api.admin_service import AdminService, expire_label_grants
from spiffe_server.api.context import ServerContext
from spiffe_server.api.local_call import READONLY_LABEL, LocalCall, Principal
from spiffe_server.ca.keys import MemoryKeyManager
from spiffe_server.ca.manager import CaConfig, CaManager, MemoryJournalStore
from spiffe_server.config import ServerConfig
from spiffe_server.datastore import open_datastore
from tests.support.policy_rules import PAYMENTS_RULE

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
AGENT = "spiffe://example.org/spire/agent/join_token/t"
ADMIN = Principal(actor="console:admin", readonly=False)
AUDITOR = Principal(actor="console:auditor", readonly=True)
RULE = "payments-needs-approval"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[AdminService, ServerContext, ManualClock]:
    clock = ManualClock(NOW)
    policy = tmp_path / "policy.toml"
    policy.write_text(PAYMENTS_RULE)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock)
    ctx = ServerContext(config=ServerConfig(trust_domain=TD, data_dir=tmp_path, policy_file=policy),
                        store=open_datastore(tmp_path / "db"), ca=ca, clock=clock)
    return AdminService(ctx), ctx, clock


async def call(service: AdminService, principal: Principal, method: str, request: object) -> object:
    stream = LocalCall(principal, method, request)
    await getattr(service, method)(stream)
    return stream.response


def _entry(**labels: str) -> types_pb2.Entry:
    return types_pb2.Entry(spiffe_id="spiffe://example.org/bot", parent_id=AGENT,
                           selectors=[types_pb2.Selector(type="unix", value="uid:1")], labels=labels)


def _audit(ctx: ServerContext) -> list[dict[str, object]]:
    return [json.loads(r.record) for r in ctx.store.iter_audit()]


async def test_read_only_principal_reads_but_cannot_change(setup: tuple[AdminService, ServerContext, ManualClock]
                                                          ) -> None:
    service, ctx, _ = setup
    listed = await call(service, AUDITOR, "ListEntries", admin_pb2.ListEntriesRequest())
    assert isinstance(listed, admin_pb2.ListEntriesResponse)
    for method, request in [("CreateEntry", admin_pb2.CreateEntryRequest(entry=_entry())),
                            ("ApproveRequest", admin_pb2.ApproveRequestRequest(entry_id="x", rule=RULE, ttl=60)),
                            ("CreateConsoleLogin", admin_pb2.CreateConsoleLoginRequest(user="x"))]:
        with pytest.raises(GRPCError) as info:
            await call(service, AUDITOR, method, request)
        assert info.value.status is Status.PERMISSION_DENIED
        assert "admin_readonly" in (info.value.message or "")
    assert ctx.store.count_entries() == 0


async def test_admin_svid_entries_labelled_read_only_may_only_read(
        setup: tuple[AdminService, ServerContext, ManualClock]) -> None:
    service, ctx, _ = setup
    created = await call(service, ADMIN, "CreateEntry", admin_pb2.CreateEntryRequest(entry=types_pb2.Entry(
        spiffe_id="spiffe://example.org/ops", parent_id=AGENT, admin=True,
        selectors=[types_pb2.Selector(type="unix", value="uid:2")], labels={READONLY_LABEL: "true"})))
    assert isinstance(created, types_pb2.Entry)
    assert service._check_admin_svid("spiffe://example.org/ops", "01") is True
    await call(service, ADMIN, "PatchEntry", admin_pb2.PatchEntryRequest(id=created.id,
                                                                          remove_labels=[READONLY_LABEL]))
    assert service._check_admin_svid("spiffe://example.org/ops", "01") is False
    # the change is audited with the console user as the actor
    assert [r["actor"] for r in _audit(ctx) if r["method"] in ("CreateEntry", "PatchEntry")] == \
        ["console:admin", "console:admin"]


async def test_approval_sets_the_label_until_it_lapses(setup: tuple[AdminService, ServerContext, ManualClock]
                                                       ) -> None:
    service, ctx, clock = setup
    entry = await call(service, ADMIN, "CreateEntry", admin_pb2.CreateEntryRequest(entry=_entry()))
    assert isinstance(entry, types_pb2.Entry)
    approved = await call(service, ADMIN, "ApproveRequest", admin_pb2.ApproveRequestRequest(
        entry_id=entry.id, rule=RULE, ttl=60, through_seq=5))
    assert isinstance(approved, types_pb2.Entry) and dict(approved.labels) == {"approved": "true"}
    (grant,) = ctx.store.list_label_grants()
    assert grant.expires_at == NOW + timedelta(seconds=60) and grant.granted_by == "console:admin"
    (decision,) = ctx.store.list_approval_decisions()
    assert decision.decision == "approved" and decision.through_seq == 5

    clock.advance(timedelta(seconds=59))
    assert await expire_label_grants(ctx) == 0
    clock.advance(timedelta(seconds=1))
    assert await expire_label_grants(ctx) == 1
    assert dict(ctx.store.get_entry(entry.id).labels) == {}
    assert ctx.store.list_label_grants() == ()
    methods = [(r["method"], r["actor"]) for r in _audit(ctx)]
    assert ("ApproveRequest", "console:admin") in methods and ("LabelExpired", "server") in methods


async def test_a_label_changed_since_the_grant_is_left_alone(
        setup: tuple[AdminService, ServerContext, ManualClock]) -> None:
    service, ctx, clock = setup
    entry = await call(service, ADMIN, "CreateEntry", admin_pb2.CreateEntryRequest(entry=_entry()))
    assert isinstance(entry, types_pb2.Entry)
    await call(service, ADMIN, "ApproveRequest", admin_pb2.ApproveRequestRequest(entry_id=entry.id, rule=RULE,
                                                                                 ttl=10))
    await call(service, ADMIN, "PatchEntry", admin_pb2.PatchEntryRequest(id=entry.id,
                                                                          set_labels={"approved": "forever"}))
    clock.advance(timedelta(seconds=10))
    assert await expire_label_grants(ctx) == 0
    assert dict(ctx.store.get_entry(entry.id).labels) == {"approved": "forever"}
    assert ctx.store.list_label_grants() == ()


@pytest.mark.parametrize(("request_", "message"), [
    (admin_pb2.ApproveRequestRequest(entry_id="e", rule="nope", ttl=60), "not an approval rule"),
    (admin_pb2.ApproveRequestRequest(entry_id="e", rule=RULE, ttl=0), "ttl"),
    (admin_pb2.ApproveRequestRequest(entry_id="e", rule=RULE, ttl=604801), "ttl"),
    (admin_pb2.ApproveRequestRequest(rule=RULE, ttl=60), "entry_id"),
])
async def test_bad_approvals_are_invalid_argument(setup: tuple[AdminService, ServerContext, ManualClock],
                                                  request_: admin_pb2.ApproveRequestRequest, message: str) -> None:
    service, ctx, _ = setup
    with pytest.raises(GRPCError) as info:
        await call(service, ADMIN, "ApproveRequest", request_)
    assert info.value.status is Status.INVALID_ARGUMENT and message in (info.value.message or "")
    assert ctx.store.list_label_grants() == ()


async def test_reject_records_the_decision_and_login_needs_the_console(
        setup: tuple[AdminService, ServerContext, ManualClock]) -> None:
    service, ctx, _ = setup
    entry = await call(service, ADMIN, "CreateEntry", admin_pb2.CreateEntryRequest(entry=_entry()))
    assert isinstance(entry, types_pb2.Entry)
    await call(service, ADMIN, "RejectRequest", admin_pb2.RejectRequestRequest(
        entry_id=entry.id, rule=RULE, reason="no", through_seq=3))
    (decision,) = ctx.store.list_approval_decisions()
    assert decision.decision == "rejected" and decision.operator == "console:admin"
    assert dict(ctx.store.get_entry(entry.id).labels) == {}
    with pytest.raises(GRPCError) as info:
        await call(service, ADMIN, "CreateConsoleLogin", admin_pb2.CreateConsoleLoginRequest(user="bob"))
    assert info.value.status is Status.FAILED_PRECONDITION


def test_the_https_console_trusts_new_bundle_roots_for_client_certificates(
        setup: tuple[AdminService, ServerContext, ManualClock], tmp_path: Path) -> None:
    from spiffe_server.ca.manager import AuthorityKind
    from spiffe_server.config import ConsoleConfig
    from spiffe_server.console.web import Console
    from tests.support.web_pki import WebPki

    service, ctx, _ = setup
    WebPki.create().write_serving(tmp_path / "c.pem", tmp_path / "k.pem", dns_names=["localhost"])
    console = Console(ctx, service, ConsoleConfig(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem"))
    context = console._tls()
    assert context is not None and len(context.get_ca_certs()) == len(ctx.roots()) == 1
    assert console.refresh_roots() is False  # nothing new
    ctx.ca.prepare(AuthorityKind.X509)  # a prepared root is in the bundle before it signs
    assert len(ctx.roots()) == 2
    assert console.refresh_roots() is True
    assert len(context.get_ca_certs()) == 2
