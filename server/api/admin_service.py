"""The Admin API: entries, join tokens, agents, bundles, minting and health.

Callers are the local CLI over the Unix socket (SO_PEERCRED uid 0, the server's own uid or
``admin_uids``) and workloads over mTLS whose SVID comes from an ``admin`` entry::

    server = Server([AdminService(ctx)])
    await server.start(path=str(cfg.admin_socket))
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from grpclib.server import Stream

from spiffe_py._memo import Memo
from spiffe_py._peercred import peer_cred
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIBase
from spiffe_py._selector_schema import check_selector
from spiffe_py.audit import AuditEvent, build_event
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import AuthorizationError, InvalidSvidError, SpiffeError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.context import ServerContext
from spiffe_server.api.convert import (
    MAX_AUDIENCE_LEN,
    MAX_AUDIENCES,
    agent_to_proto,
    bundle_from_proto,
    bundle_to_proto,
    certs_to_der,
    check_dns_names,
    check_ttl,
    check_unix_seconds,
    entry_from_proto,
    entry_to_proto,
    from_ts,
    jwt_claims_of,
    parse_label_filter,
    parse_member_id,
    parse_selectors,
    parse_workload_id,
    ts,
)
from spiffe_server.api.errors import RequestError, grpc_errors, recv_request, to_grpc_error
from spiffe_server.api.local_call import READ_METHODS, READONLY_LABEL, LocalCall
from spiffe_server.api.peer import is_tls, peer_leaf, spiffe_id_of, verify_peer_svid
from spiffe_server.api.revocation_hub import revocation_to_proto
from spiffe_server.api.revocations import (
    revoke_agent,
    revoke_entry,
    revoke_svid,
)
from spiffe_server.approvals import Denial, approval_rules, check_approval_ttl, denial_of, pending_approvals
from spiffe_server.audit import Sealer, verify_store
from spiffe_server.ca.manager import AuthorityKind
from spiffe_server.ca.signer import parse_csr
from spiffe_server.ca.slots import AuthorityInfo, SlotStatus
from spiffe_server.ca.templates import JwtSvidParams, X509SvidParams
from spiffe_server.datastore import (
    AgentFilter,
    ApprovalDecision,
    AttestedAgent,
    AuditedEntry,
    AuditFilter,
    AuditRecord,
    BundleRecord,
    EntryFilter,
    FederationRecord,
    JoinToken,
    LabelGrant,
    MatchMode,
    NotFoundError,
    Page,
    RegistrationEntry,
    Revocation,
    RevocationKind,
    SelectorMatch,
)
from spiffe_server.datastore.base import EntrySeal
from spiffe_server.datastore.errors import DataStoreError
from spiffe_server.datastore.models import MAX_PAGE_SIZE
from spiffe_server.errors import FailedPreconditionError
from spiffe_server.federation.refresher import Federation, RelationshipStatus
from spiffe_server.federation.relationship import Relationship, parse_bootstrap_bundle, parse_relationship
from spiffe_server.guard import keep_quarantine, patch_entry
from spiffe_server.health import run_checks
from spiffe_server.nodeattest.join_token import DEFAULT_JOIN_TOKEN_TTL, generate_join_token, join_token_agent_id
from spiffe_server.revocation import check_reason, jwt_issuance, serial_hex, x509_issuance

log = logging.getLogger("spiffe_server.admin")

DEFAULT_PAGE_SIZE = 100
INBOX_WINDOW = timedelta(hours=24)  # denials older than this leave the approvals inbox
INBOX_SCAN = 500  # newest deny records read for the inbox (a human-sized backlog)
MAX_BATCH = 1000  # entries (or ids) per Batch*Entry call
MAX_PURGE_AGE = 100 * 365 * 86400  # agent purge --expired-for: at most about a century, in seconds
# the levels SetLogLevel takes (SPIRE and Go spell warning "warn")
LOG_LEVEL_NAMES = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                   "warn": logging.WARNING, "error": logging.ERROR}
_OK = admin_pb2.ItemStatus(code=0, message="OK")


def _item_status(err: Exception, method: str) -> admin_pb2.ItemStatus:
    """One batch item's failure as the status a single call would have returned (INTERNAL stays generic)."""
    mapped = to_grpc_error(err, method)
    return admin_pb2.ItemStatus(code=mapped.status.value, message=mapped.message or "")


def _entry_event(now: datetime, actor: str, method: str, entry: RegistrationEntry) -> AuditEvent:
    """The audit event of an admin entry change (a deletion carries no labels)."""
    details: dict[str, Any] = {"entry_id": entry.id}
    if not method.endswith("DeleteEntry"):
        details["labels"] = dict(entry.labels)
    return build_event(now=now, actor=actor, spiffe_id=entry.spiffe_id, selectors=(), decision="allow",
                       reason="admin change", method=method, details=details)


def _required(value: str, field: str = "id") -> str:
    """``value``, or INVALID_ARGUMENT "<field>: required" when it is empty."""
    if not value:
        raise RequestError(field, "required")
    return value


def _page(size: int, token: str) -> Page:
    if not 0 <= size <= MAX_PAGE_SIZE:
        raise RequestError("page_size", f"must be within 0..{MAX_PAGE_SIZE}, got {size}")
    return Page(token=token, size=size or DEFAULT_PAGE_SIZE)


class AdminService(AdminAPIBase):
    """grpclib handlers of ``spiffepy.server.v1.AdminAPI``."""

    def __init__(self, ctx: ServerContext, *, federation: Federation | None = None) -> None:
        self._ctx = ctx
        self._federation = federation
        self._uids = frozenset({0, os.getuid(), *ctx.config.admin_uids})
        # deny records are sealed: each is parsed for the approvals inbox once
        self._denials: Memo[tuple[int, str], Denial | None] = Memo(max_size=4 * INBOX_SCAN)

    # -- authorization --------------------------------------------------------------------

    async def _authorize(self, stream: Stream[Any, Any]) -> None:
        if isinstance(stream, LocalCall):  # the web console, on behalf of its authenticated user
            await self._authorize_local(stream)
            return
        if not is_tls(stream):
            uid = peer_cred(stream).uid
            if uid not in self._uids:
                raise AuthorizationError(f"admin: uid {uid} is not an admin")
            return
        ctx = self._ctx
        leaf = peer_leaf(stream)
        caller = verify_peer_svid(leaf, ctx.roots(), ctx.intermediates(), now=ctx.clock.now())
        readonly = await ctx.call(self._check_admin_svid, str(caller), serial_hex(leaf.serial_number))
        # grpclib keeps the ":path" of the call; an unknown method counts as a change
        _check_role(str(getattr(stream, "_method_name", "")).rsplit("/", 1)[-1], str(caller), readonly=readonly)

    async def _authorize_local(self, call: LocalCall) -> None:
        principal, readonly = call.principal, call.principal.readonly
        if principal.leaf is not None:
            ctx = self._ctx
            caller = verify_peer_svid(principal.leaf, ctx.roots(), ctx.intermediates(), now=ctx.clock.now())
            readonly = await ctx.call(self._check_admin_svid, str(caller),
                                      serial_hex(principal.leaf.serial_number)) or readonly
        _check_role(call.method, principal.actor, readonly=readonly)

    def _check_admin_svid(self, caller: str, serial: str) -> bool:
        """Blocking, every call: the SVID is not revoked; an admin entry for it exists and none is quarantined.

        Returns True when the caller may only read: each of its admin entries carries ``admin_readonly=true``.
        """
        store = self._ctx.store
        if store.is_revoked(RevocationKind.SERIAL, serial):
            raise AuthorizationError(f"admin: svid {serial} of {caller!r} is revoked")
        entries = store.list_entries(EntryFilter(by_spiffe_id=caller), Page(size=MAX_PAGE_SIZE)).items
        quarantined = [e.id for e in entries if e.quarantined]
        if quarantined:
            raise AuthorizationError(f"admin: {caller!r} is quarantined (entry {quarantined[0]!r})")
        admins = [e for e in entries if e.admin]
        if not admins:
            raise AuthorizationError(f"admin: {caller!r} is not an admin identity")
        return all(e.labels.get(READONLY_LABEL) == "true" for e in admins)

    async def _request(self, stream: Stream[Any, Any]) -> Any:
        await self._authorize(stream)
        return await recv_request(stream)

    @staticmethod
    def _actor(stream: Stream[Any, Any]) -> str:
        """Who is calling, for the audit trail: ``uid:<n>`` on the socket, the SPIFFE ID over mTLS."""
        if isinstance(stream, LocalCall):
            return stream.principal.actor
        return str(spiffe_id_of(peer_leaf(stream))) if is_tls(stream) else f"uid:{peer_cred(stream).uid}"

    async def _audit(self, stream: Stream[Any, Any], method: str, spiffe_id: str | None, **details: Any) -> None:
        """Append an admin change to the audit chain."""
        await self._ctx.guard.note(actor=self._actor(stream), method=method, spiffe_id=spiffe_id,
                                   reason="admin change", details=details)

    # -- entries ----------------------------------------------------------------------------

    async def CreateEntry(self, stream: Stream[admin_pb2.CreateEntryRequest, types_pb2.Entry]) -> None:
        with grpc_errors("CreateEntry"):
            req = await self._request(stream)
            entry = entry_from_proto(req.entry, trust_domain=self._ctx.config.trust_domain, now=self._ctx.clock.now())
            self._check_selectors(entry, allow_unknown=req.allow_unknown_selectors)
            if entry.federates_with:
                check_federates_with(entry, await self._federated_domains())
            created = await self._write_entry(
                stream, "CreateEntry", lambda seal: self._ctx.store.create_entry_audited(entry, seal))
            log.info("entry created", extra={"entry_id": created.id, "spiffe_id": created.spiffe_id})
            await stream.send_message(entry_to_proto(created))

    async def UpdateEntry(self, stream: Stream[admin_pb2.UpdateEntryRequest, types_pb2.Entry]) -> None:
        with grpc_errors("UpdateEntry"):
            req = await self._request(stream)
            _required(req.entry.id, "entry.id")
            entry = entry_from_proto(req.entry, trust_domain=self._ctx.config.trust_domain, now=self._ctx.clock.now())
            self._check_selectors(entry, allow_unknown=req.allow_unknown_selectors)
            if entry.federates_with:
                check_federates_with(entry, await self._federated_domains())
            entry = keep_quarantine(entry, await self._ctx.call(self._ctx.store.get_entry, entry.id))
            updated = await self._write_entry(
                stream, "UpdateEntry", lambda seal: self._ctx.store.update_entry_audited(entry, seal))
            await stream.send_message(entry_to_proto(updated))

    async def DeleteEntry(self, stream: Stream[admin_pb2.DeleteEntryRequest, admin_pb2.DeleteEntryResponse]) -> None:
        with grpc_errors("DeleteEntry"):
            req = await self._request(stream)
            _required(req.id)
            await self._write_entry(stream, "DeleteEntry",
                                    lambda seal: self._ctx.store.delete_entry_audited(req.id, seal))
            await stream.send_message(admin_pb2.DeleteEntryResponse())

    async def GetEntry(self, stream: Stream[admin_pb2.GetEntryRequest, types_pb2.Entry]) -> None:
        with grpc_errors("GetEntry"):
            req = await self._request(stream)
            _required(req.id)
            await stream.send_message(entry_to_proto(await self._ctx.call(self._ctx.store.get_entry, req.id)))

    async def ListEntries(self, stream: Stream[admin_pb2.ListEntriesRequest, admin_pb2.ListEntriesResponse]) -> None:
        with grpc_errors("ListEntries"):
            req = await self._request(stream)
            flt = self._entry_filter(req, labels=parse_label_filter(req.labels))
            result = await self._ctx.call(self._ctx.store.list_entries, flt, _page(req.page_size, req.page_token))
            await stream.send_message(admin_pb2.ListEntriesResponse(
                entries=[entry_to_proto(e) for e in result.items], next_page_token=result.next_token))

    async def CountEntries(self, stream: Stream[admin_pb2.CountRequest, admin_pb2.CountResponse]) -> None:
        with grpc_errors("CountEntries"):
            await self._request(stream)
            count = await self._ctx.call(self._ctx.store.count_entries)
            await stream.send_message(admin_pb2.CountResponse(count=count))

    async def CountEntriesMatching(self, stream: Stream[admin_pb2.CountEntriesRequest,
                                                        admin_pb2.CountResponse]) -> None:
        with grpc_errors("CountEntriesMatching"):
            req = await self._request(stream)
            flt = self._entry_filter(req, hint=req.hint or None)
            count = await self._ctx.call(self._ctx.store.count_entries, flt)
            await stream.send_message(admin_pb2.CountResponse(count=count))

    def _entry_filter(self, req: admin_pb2.ListEntriesRequest | admin_pb2.CountEntriesRequest,
                      hint: str | None = None, labels: tuple[dict[str, str], tuple[str, ...]] = ({}, ())
                      ) -> EntryFilter:
        """The datastore filter of a ListEntries or CountEntriesMatching request (INVALID_ARGUMENT if malformed)."""
        td = self._ctx.config.trust_domain
        selectors = parse_selectors(req.selectors, "selectors")
        try:
            mode = MatchMode(req.match_selectors or "exact")
        except ValueError:
            raise RequestError("match_selectors", "must be exact, subset, superset or any, "
                                                  f"got {req.match_selectors!r}") from None
        if req.match_selectors and not selectors:
            raise RequestError("match_selectors", "needs selectors")
        return EntryFilter(
            by_spiffe_id=str(parse_member_id(req.spiffe_id, "spiffe_id", td)) if req.spiffe_id else None,
            by_parent_id=str(parse_member_id(req.parent_id, "parent_id", td)) if req.parent_id else None,
            by_selectors=SelectorMatch(selectors=selectors, mode=mode) if selectors else None,
            by_hint=hint, labels=labels[0], label_keys=labels[1])

    def _check_selectors(self, entry: RegistrationEntry, *, allow_unknown: bool) -> None:
        """INVALID_ARGUMENT naming the first selector no attestor produces (with a suggestion), unless allowed."""
        if allow_unknown:
            return
        extra = frozenset(self._ctx.config.extra_selector_types)
        for selector in entry.selectors:
            problem = check_selector(selector.type, selector.value, extra_types=extra)
            if problem is not None:
                raise RequestError("entry.selectors", problem)

    # -- entry batches ------------------------------------------------------------------------

    def _batch(self, items: Sequence[Any], field: str = "entries") -> None:
        if len(items) > MAX_BATCH:
            raise RequestError(field, f"at most {MAX_BATCH} per call, got {len(items)}")

    async def _entry_results(self, stream: Stream[Any, Any], method: str,
                             parsed: Sequence[RegistrationEntry | Exception],
                             store_call: Callable[[list[RegistrationEntry]], list[RegistrationEntry | DataStoreError]],
                             ) -> admin_pb2.BatchEntryResponse:
        """Store the entries that parsed (one transaction), then one result per requested entry, in order."""
        valid = [e for e in parsed if isinstance(e, RegistrationEntry)]
        stored = iter(await self._ctx.call(store_call, valid) if valid else [])
        outcomes = [next(stored) if isinstance(p, RegistrationEntry) else p for p in parsed]
        done = [o for o in outcomes if isinstance(o, RegistrationEntry)]
        if done:
            self._ctx.changes.notify()
            await self._audit_many(stream, method, done)
        return admin_pb2.BatchEntryResponse(results=[
            admin_pb2.EntryResult(status=_OK, entry=entry_to_proto(o)) if isinstance(o, RegistrationEntry)
            else admin_pb2.EntryResult(status=_item_status(o, method)) for o in outcomes])

    async def _audit_many(self, stream: Stream[Any, Any], method: str, entries: Sequence[RegistrationEntry]) -> None:
        actor, now = self._actor(stream), self._ctx.clock.now()
        await self._ctx.guard.record([_entry_event(now, actor, method, e) for e in entries])

    async def _write_entry(self, stream: Stream[Any, Any], method: str,
                           write: Callable[[EntrySeal], AuditedEntry]) -> RegistrationEntry:
        """One entry write and its audit record, in one transaction; wakes the sync streams."""
        actor, now = self._actor(stream), self._ctx.clock.now()

        def audited(sealer: Sealer) -> AuditedEntry:
            return write(lambda entry: sealer([_entry_event(now, actor, method, entry)]))

        result: AuditedEntry = await self._ctx.call(self._ctx.guard.audit.append_in, audited, lambda r: r.audit)
        self._ctx.changes.notify()
        return result.entry

    def _parse_entries(self, items: Sequence[types_pb2.Entry], *, need_id: bool,
                       allow_unknown: bool, federated: frozenset[str]) -> list[RegistrationEntry | Exception]:
        td, now = self._ctx.config.trust_domain, self._ctx.clock.now()
        out: list[RegistrationEntry | Exception] = []
        for item in items:
            try:
                if need_id:
                    _required(item.id, "entry.id")
                entry = entry_from_proto(item, trust_domain=td, now=now)
                self._check_selectors(entry, allow_unknown=allow_unknown)
                check_federates_with(entry, federated)
                out.append(entry)
            except SpiffeError as err:
                out.append(err)
        return out

    async def BatchCreateEntry(self, stream: Stream[admin_pb2.BatchCreateEntryRequest,
                                                    admin_pb2.BatchEntryResponse]) -> None:
        with grpc_errors("BatchCreateEntry"):
            req = await self._request(stream)
            self._batch(req.entries)
            parsed = self._parse_entries(req.entries, need_id=False, allow_unknown=req.allow_unknown_selectors,
                                         federated=await self._federated_domains_for(req.entries))
            await stream.send_message(await self._entry_results(stream, "BatchCreateEntry", parsed,
                                                                self._ctx.store.create_entries))

    async def BatchUpdateEntry(self, stream: Stream[admin_pb2.BatchUpdateEntryRequest,
                                                    admin_pb2.BatchEntryResponse]) -> None:
        with grpc_errors("BatchUpdateEntry"):
            req = await self._request(stream)
            self._batch(req.entries)
            parsed = self._parse_entries(req.entries, need_id=True, allow_unknown=req.allow_unknown_selectors,
                                         federated=await self._federated_domains_for(req.entries))
            store = self._ctx.store
            await stream.send_message(await self._entry_results(
                stream, "BatchUpdateEntry", parsed, lambda batch: store.update_entries(batch, merge=keep_quarantine)))

    async def BatchDeleteEntry(self, stream: Stream[admin_pb2.BatchDeleteEntryRequest,
                                                    admin_pb2.BatchDeleteEntryResponse]) -> None:
        with grpc_errors("BatchDeleteEntry"):
            req = await self._request(stream)
            self._batch(req.ids, "ids")
            ids = list(req.ids)
            wanted = [i for i in ids if i]
            stored = iter(await self._ctx.call(self._ctx.store.delete_entries, wanted) if wanted else [])
            outcomes: list[RegistrationEntry | Exception] = [
                next(stored) if i else RequestError("id", "required") for i in ids]
            done = [o for o in outcomes if isinstance(o, RegistrationEntry)]
            if done:
                self._ctx.changes.notify()
                await self._audit_many(stream, "BatchDeleteEntry", done)
            await stream.send_message(admin_pb2.BatchDeleteEntryResponse(results=[
                admin_pb2.DeleteEntryResult(status=_OK if isinstance(o, RegistrationEntry)
                                            else _item_status(o, "BatchDeleteEntry"), id=i)
                for i, o in zip(ids, outcomes, strict=True)]))

    # -- join tokens --------------------------------------------------------------------------

    async def CreateJoinToken(self, stream: Stream[admin_pb2.CreateJoinTokenRequest, admin_pb2.JoinToken]) -> None:
        with grpc_errors("CreateJoinToken"):
            req = await self._request(stream)
            ctx = self._ctx
            ttl = timedelta(seconds=check_ttl(req.ttl, "ttl")) if req.ttl else DEFAULT_JOIN_TOKEN_TTL
            alias = parse_workload_id(req.spiffe_id, "spiffe_id", ctx.config.trust_domain) if req.spiffe_id else None
            now = ctx.clock.now()
            record = generate_join_token(now=now, ttl=ttl)
            await ctx.call(ctx.store.create_join_token, JoinToken(
                token=record.token, expires_at=record.expires_at, spiffe_id=None if alias is None else str(alias)))
            agent_id = str(join_token_agent_id(ctx.config.trust_domain, record.token))  # holds no token
            if alias is not None:
                await self._create_alias(agent_id, alias)
            # never the token itself
            await self._audit(stream, "CreateJoinToken", None if alias is None else str(alias),
                              expires_at=ts(record.expires_at), agent_id=agent_id)
            await stream.send_message(admin_pb2.JoinToken(value=record.token, expires_at=ts(record.expires_at),
                                                          agent_id=agent_id))

    async def _create_alias(self, agent_id: str, alias: SpiffeId) -> None:
        # SPIRE `token generate -spiffeID`: an entry for the alias parented to the future agent ID.
        entry = RegistrationEntry(spiffe_id=str(alias), parent_id=agent_id,
                                  selectors=(Selector("spiffe_id", agent_id),), created_at=self._ctx.clock.now())
        await self._ctx.call(self._ctx.store.create_entry, entry)

    # -- agents ---------------------------------------------------------------------------------

    async def ListAgents(self, stream: Stream[admin_pb2.ListAgentsRequest, admin_pb2.ListAgentsResponse]) -> None:
        with grpc_errors("ListAgents"):
            req = await self._request(stream)
            result = await self._ctx.call(self._ctx.store.list_agents, None, _page(req.page_size, req.page_token))
            await stream.send_message(admin_pb2.ListAgentsResponse(
                agents=[self._agent_pb(a) for a in result.items], next_page_token=result.next_token))

    def _agent_pb(self, agent: AttestedAgent) -> types_pb2.Agent:
        """The agent on the wire, with this server's in-memory view of its sync (not shared between servers)."""
        pb = agent_to_proto(agent)
        last, syncing = self._ctx.syncs.state(agent.spiffe_id)
        pb.last_sync, pb.syncing = ts(last), syncing
        return pb

    async def _agent_id(self, stream: Stream[Any, Any]) -> str:
        req = await self._request(stream)
        return str(parse_member_id(req.spiffe_id, "spiffe_id", self._ctx.config.trust_domain))

    async def GetAgent(self, stream: Stream[admin_pb2.AgentRequest, types_pb2.Agent]) -> None:
        with grpc_errors("GetAgent"):
            agent_id = await self._agent_id(stream)
            await stream.send_message(self._agent_pb(await self._ctx.call(self._ctx.store.get_agent, agent_id)))

    async def BanAgent(self, stream: Stream[admin_pb2.AgentRequest, admin_pb2.AgentActionResponse]) -> None:
        with grpc_errors("BanAgent"):
            agent_id = await self._agent_id(stream)
            await self._ctx.call(self._ctx.store.ban_agent, agent_id, now=self._ctx.clock.now())
            self._ctx.changes.notify()
            log.info("agent banned", extra={"spiffe_id": agent_id})
            await self._audit(stream, "BanAgent", agent_id)
            await stream.send_message(admin_pb2.AgentActionResponse())

    async def EvictAgent(self, stream: Stream[admin_pb2.AgentRequest, admin_pb2.AgentActionResponse]) -> None:
        with grpc_errors("EvictAgent"):
            agent_id = await self._agent_id(stream)
            await self._ctx.call(self._ctx.store.delete_agent, agent_id)
            self._ctx.changes.notify()
            log.info("agent evicted", extra={"spiffe_id": agent_id})
            await self._audit(stream, "EvictAgent", agent_id)
            await stream.send_message(admin_pb2.AgentActionResponse())

    async def CountAgents(self, stream: Stream[admin_pb2.CountRequest, admin_pb2.CountResponse]) -> None:
        with grpc_errors("CountAgents"):
            await self._request(stream)
            count = await self._ctx.call(self._ctx.store.count_agents)
            await stream.send_message(admin_pb2.CountResponse(count=count))

    # -- bundles --------------------------------------------------------------------------------

    async def GetBundle(self, stream: Stream[admin_pb2.GetBundleRequest, types_pb2.Bundle]) -> None:
        with grpc_errors("GetBundle"):
            await self._request(stream)
            await stream.send_message(bundle_to_proto(self._ctx.ca.bundle()))

    async def ListFederatedBundles(
        self, stream: Stream[admin_pb2.ListFederatedBundlesRequest, admin_pb2.ListFederatedBundlesResponse]
    ) -> None:
        with grpc_errors("ListFederatedBundles"):
            await self._request(stream)
            bundles = await federated_bundles(self._ctx)
            await stream.send_message(admin_pb2.ListFederatedBundlesResponse(bundles=bundles))

    def _foreign(self, name: str, field: str) -> TrustDomain:
        try:
            td = TrustDomain.parse(name)
        except SpiffeError as err:
            raise RequestError(field, str(err)) from err
        if td == self._ctx.config.trust_domain:
            raise RequestError(field, f"must not be the server's own trust domain {td.name!r}")
        return td

    async def SetFederatedBundle(self, stream: Stream[admin_pb2.SetFederatedBundleRequest, types_pb2.Bundle]) -> None:
        with grpc_errors("SetFederatedBundle"):
            req = await self._request(stream)
            self._foreign(req.bundle.trust_domain, "bundle.trust_domain")
            bundle = bundle_from_proto(req.bundle)
            if not bundle.x509_authorities and not bundle.jwt_authorities:
                raise RequestError("bundle", "must hold at least one authority")
            record = BundleRecord(trust_domain=bundle.trust_domain.name, data=bundle.to_json())
            await self._ctx.call(self._ctx.store.set_bundle, record)
            self._ctx.changes.notify()
            await self._audit(stream, "SetFederatedBundle", None, trust_domain=record.trust_domain)
            await stream.send_message(bundle_to_proto(bundle))

    async def DeleteFederatedBundle(
        self, stream: Stream[admin_pb2.DeleteFederatedBundleRequest, admin_pb2.DeleteFederatedBundleResponse]
    ) -> None:
        with grpc_errors("DeleteFederatedBundle"):
            req = await self._request(stream)
            td = self._foreign(req.trust_domain, "trust_domain")
            await self._ctx.call(self._ctx.store.delete_bundle, td.name)
            self._ctx.changes.notify()
            await self._audit(stream, "DeleteFederatedBundle", None, trust_domain=td.name)
            await stream.send_message(admin_pb2.DeleteFederatedBundleResponse())

    # -- federation relationships ---------------------------------------------------------------

    async def _federated_domains(self) -> frozenset[str]:
        """Trust domains an entry may federate with: those with a stored bundle or a relationship."""
        names = {record.trust_domain for record in await self._ctx.call(self._ctx.store.list_bundles)}
        if self._federation is not None:
            names.update(td.name for td in await self._federation.wanted())
        return frozenset(names)

    async def _federated_domains_for(self, items: Sequence[types_pb2.Entry]) -> frozenset[str]:
        """:meth:`_federated_domains`, read only when some entry names a trust domain."""
        return await self._federated_domains() if any(item.federates_with for item in items) else frozenset()

    def _fed(self) -> Federation:
        if self._federation is None:
            raise FailedPreconditionError("federation: not running on this server")
        return self._federation

    def _relationship(self, pb: admin_pb2.FederationRelationship) -> Relationship:
        rel = parse_relationship(pb.trust_domain, pb.bundle_endpoint_url, pb.bundle_endpoint_profile,
                                 pb.endpoint_spiffe_id, own=self._ctx.config.trust_domain)
        if self._fed().is_static(rel.trust_domain):
            raise FailedPreconditionError(f"federation: the relationship with {rel.trust_domain.name!r} comes "
                                          "from the config file; change it there")
        return rel

    async def _store_bootstrap(self, rel: Relationship, data: bytes) -> None:
        if not data:
            return
        try:
            bundle = parse_bootstrap_bundle(rel.trust_domain, data)
        except SpiffeError as err:
            raise RequestError("trust_domain_bundle", str(err)) from err
        await self._ctx.call(self._ctx.store.set_bundle,
                             BundleRecord(trust_domain=rel.trust_domain.name, data=bundle.to_json()))
        self._ctx.changes.notify()

    async def _write_relationship(self, stream: Stream[Any, Any], method: str) -> None:
        req = await self._request(stream)
        rel = self._relationship(req.relationship)
        record = FederationRecord(trust_domain=rel.trust_domain.name, bundle_endpoint_url=rel.bundle_endpoint_url,
                                  bundle_endpoint_profile=rel.profile.value,
                                  endpoint_spiffe_id=str(rel.endpoint_spiffe_id or ""),
                                  created_at=self._ctx.clock.now())
        write = self._ctx.store.create_federation if method == "CreateFederationRelationship" \
            else self._ctx.store.update_federation
        await self._ctx.call(write, record)
        await self._store_bootstrap(rel, req.trust_domain_bundle)
        await self._audit(stream, method, None, trust_domain=record.trust_domain, url=record.bundle_endpoint_url,
                          profile=record.bundle_endpoint_profile, endpoint_spiffe_id=record.endpoint_spiffe_id,
                          bootstrap_bundle=bool(req.trust_domain_bundle))
        log.info("federation relationship %s", "created" if method.startswith("Create") else "updated",
                 extra={"trust_domain": record.trust_domain, "url": record.bundle_endpoint_url})
        fed = self._fed()
        await fed.reconcile()  # its refresher starts (or restarts) now
        await fed.first_fetch(rel.trust_domain)  # the reply shows how the first fetch went
        await stream.send_message(relationship_to_proto(await fed.status(rel.trust_domain)))

    async def CreateFederationRelationship(
        self, stream: Stream[admin_pb2.FederationRelationshipRequest, admin_pb2.FederationRelationship]
    ) -> None:
        with grpc_errors("CreateFederationRelationship"):
            await self._write_relationship(stream, "CreateFederationRelationship")

    async def UpdateFederationRelationship(
        self, stream: Stream[admin_pb2.FederationRelationshipRequest, admin_pb2.FederationRelationship]
    ) -> None:
        with grpc_errors("UpdateFederationRelationship"):
            await self._write_relationship(stream, "UpdateFederationRelationship")

    async def DeleteFederationRelationship(
        self, stream: Stream[admin_pb2.FederationRelationshipId, admin_pb2.DeleteFederationRelationshipResponse]
    ) -> None:
        with grpc_errors("DeleteFederationRelationship"):
            req = await self._request(stream)
            td = self._foreign(req.trust_domain, "trust_domain")
            fed = self._fed()
            if fed.is_static(td):
                raise FailedPreconditionError(f"federation: the relationship with {td.name!r} comes from the "
                                              "config file; remove it there")
            await self._ctx.call(self._ctx.store.delete_federation, td.name)
            await fed.stop_refreshing(td)  # no fetch in flight may store the bundle again
            with contextlib.suppress(NotFoundError):
                await self._ctx.call(self._ctx.store.delete_bundle, td.name)
            self._ctx.changes.notify()  # workloads lose the bundle with their next sync message (FED-25)
            await self._audit(stream, "DeleteFederationRelationship", None, trust_domain=td.name)
            log.info("federation relationship deleted", extra={"trust_domain": td.name})
            await stream.send_message(admin_pb2.DeleteFederationRelationshipResponse())

    async def ListFederationRelationships(
        self, stream: Stream[admin_pb2.ListFederationRelationshipsRequest,
                             admin_pb2.ListFederationRelationshipsResponse]
    ) -> None:
        with grpc_errors("ListFederationRelationships"):
            await self._request(stream)
            statuses = await self._fed().statuses()
            await stream.send_message(admin_pb2.ListFederationRelationshipsResponse(
                relationships=[relationship_to_proto(s) for s in statuses]))

    async def GetFederationRelationship(
        self, stream: Stream[admin_pb2.FederationRelationshipId, admin_pb2.FederationRelationship]
    ) -> None:
        with grpc_errors("GetFederationRelationship"):
            req = await self._request(stream)
            td = self._foreign(req.trust_domain, "trust_domain")
            await stream.send_message(relationship_to_proto(await self._fed().status(td)))

    async def RefreshFederationRelationship(
        self, stream: Stream[admin_pb2.FederationRelationshipId, admin_pb2.FederationRelationship]
    ) -> None:
        with grpc_errors("RefreshFederationRelationship"):
            req = await self._request(stream)
            td = self._foreign(req.trust_domain, "trust_domain")
            status = await self._fed().refresh(td)
            await self._audit(stream, "RefreshFederationRelationship", None, trust_domain=td.name)
            await stream.send_message(relationship_to_proto(status))

    # -- minting --------------------------------------------------------------------------------

    async def MintX509SVID(self, stream: Stream[admin_pb2.MintX509SVIDRequest, admin_pb2.MintX509SVIDResponse]) -> None:
        with grpc_errors("MintX509SVID"):
            req = await self._request(stream)
            ctx = self._ctx
            if not req.csr:
                raise RequestError("csr", "required")
            csr = parse_csr(req.csr)
            if csr.spiffe_id is None:
                raise RequestError("csr", "must hold exactly one spiffe id uri san")
            sid = parse_workload_id(str(csr.spiffe_id), "csr.spiffe_id", ctx.config.trust_domain)
            dns_names = check_dns_names(csr.dns_names, "csr.dns_names")
            ttl = check_ttl(req.ttl, "ttl")
            mint = await ctx.guard.admin_request(ctx.store, rpc="MintX509SVID", actor=self._actor(stream),
                                                 spiffe_id=str(sid), ttl_seconds=ttl)  # policy + audit
            chain = await ctx.guard.mint_x509(mint, lambda t: ctx.ca.sign_x509_svid(X509SvidParams(
                spiffe_id=sid, public_key=csr.public_key, ttl=t, dns_names=dns_names)),
                lambda c: x509_issuance(c[0], spiffe_id=str(sid)))
            await stream.send_message(admin_pb2.MintX509SVIDResponse(
                svid_chain=certs_to_der(ctx.issued_chain(chain)), bundle=bundle_to_proto(ctx.ca.bundle())))

    async def MintJWTSVID(self, stream: Stream[admin_pb2.MintJWTSVIDRequest, admin_pb2.MintJWTSVIDResponse]) -> None:
        with grpc_errors("MintJWTSVID"):
            req = await self._request(stream)
            sid = parse_workload_id(req.spiffe_id, "spiffe_id", self._ctx.config.trust_domain)
            audience = check_audience(req.audience)
            ttl = check_ttl(req.ttl, "ttl")
            ctx = self._ctx
            mint = await ctx.guard.admin_request(ctx.store, rpc="MintJWTSVID", actor=self._actor(stream),
                                                 spiffe_id=str(sid), audiences=audience,
                                                 ttl_seconds=ttl)  # policy + audit
            token = await ctx.guard.mint_jwt(mint, lambda t: ctx.ca.sign_jwt_svid(JwtSvidParams(
                spiffe_id=sid, audience=audience, ttl=t)), lambda tok: jwt_issuance(jwt_claims_of(tok)))
            expires_at = int(jwt_claims_of(token)["exp"])
            await stream.send_message(admin_pb2.MintJWTSVIDResponse(token=token, expires_at=expires_at))

    # -- audit, labels and quarantine ---------------------------------------------------

    async def ListAudit(self, stream: Stream[admin_pb2.ListAuditRequest, admin_pb2.ListAuditResponse]) -> None:
        with grpc_errors("ListAudit"):
            req = await self._request(stream)
            if req.decision not in ("", "allow", "deny"):
                raise RequestError("decision", f"must be 'allow' or 'deny', got {req.decision!r}")
            if req.since < 0:
                raise RequestError("since", f"must not be negative, got {req.since}")
            check_unix_seconds(req.since, "since")
            flt = AuditFilter(since=from_ts(req.since), spiffe_id=req.spiffe_id or None,
                              decision=req.decision or None)
            result = await self._ctx.call(self._ctx.store.list_audit, flt, _page(req.page_size, req.page_token))
            await stream.send_message(admin_pb2.ListAuditResponse(
                records=[r.record for r in result.items], next_page_token=result.next_token))

    async def VerifyAudit(self, stream: Stream[admin_pb2.VerifyAuditRequest, admin_pb2.VerifyAuditResponse]) -> None:
        with grpc_errors("VerifyAudit"):
            await self._request(stream)
            store, key = self._ctx.store, self._ctx.guard.audit.public_key
            result = await self._ctx.call(lambda: verify_store(store.iter_audit(), store.iter_audit_checkpoints(), key,
                                                               store.latest_audit_prune()))
            await stream.send_message(admin_pb2.VerifyAuditResponse(
                ok=result.ok, count=result.count, seq=result.seq or 0, kind=str(result.kind or ""),
                reason=result.reason))

    async def PatchEntry(self, stream: Stream[admin_pb2.PatchEntryRequest, types_pb2.Entry]) -> None:
        with grpc_errors("PatchEntry"):
            req = await self._request(stream)
            _required(req.id)
            ctx = self._ctx
            stored = await ctx.call(ctx.store.get_entry, req.id)
            entry = patch_entry(stored, set_labels=dict(req.set_labels), remove_labels=list(req.remove_labels),
                                clear_quarantine=req.clear_quarantine)
            updated = await ctx.call(ctx.store.update_entry, entry)
            ctx.changes.notify()
            await self._audit(stream, "PatchEntry", updated.spiffe_id, entry_id=updated.id,
                              set_labels=dict(req.set_labels), remove_labels=list(req.remove_labels),
                              cleared_quarantine=stored.quarantined and not updated.quarantined)
            await stream.send_message(entry_to_proto(updated))

    async def QuarantineEntry(self, stream: Stream[admin_pb2.QuarantineEntryRequest, types_pb2.Entry]) -> None:
        with grpc_errors("QuarantineEntry"):
            req = await self._request(stream)
            _required(req.id)
            ctx = self._ctx
            reason = req.reason or "quarantined by an admin"
            check_reason(f"quarantined: {reason}")
            actor = self._actor(stream)
            updated = await ctx.guard.quarantine(ctx.store, req.id, reason=reason, actor=actor)
            # its unexpired SVIDs are revoked through the issue-5 machinery (CRLs, pushed revocations);
            # revoke_entry wakes the SyncAuthorized streams, which then see the quarantine too
            await revoke_entry(ctx, req.id, reason=f"quarantined: {reason}", delete=False, actor=actor)
            await stream.send_message(entry_to_proto(updated))

    # -- health -----------------------------------------------------------------------------------

    async def Health(self, stream: Stream[admin_pb2.HealthRequest, admin_pb2.HealthResponse]) -> None:
        with grpc_errors("Health"):
            await self._request(stream)
            checks = await run_checks(self._ctx)
            ready = all(v == "ok" for v in checks.values())
            await stream.send_message(admin_pb2.HealthResponse(live=True, ready=ready, checks=checks))

    # -- revocation ------------------------------------------------------------------------

    async def RevokeSvid(self, stream: Stream[admin_pb2.RevokeSvidRequest, admin_pb2.RevokeResponse]) -> None:
        with grpc_errors("RevokeSvid"):
            req = await self._request(stream)
            which = req.WhichOneof("svid")
            if which is None:
                raise RequestError("svid", "x509_serial or jwt_id is required")
            revs = await revoke_svid(self._ctx, serial=req.x509_serial if which == "x509_serial" else None,
                                     jti=req.jwt_id if which == "jwt_id" else None, reason=req.reason,
                                     actor=self._actor(stream))
            await stream.send_message(_revoked(revs))

    async def RevokeEntry(self, stream: Stream[admin_pb2.RevokeEntryRequest, admin_pb2.RevokeResponse]) -> None:
        with grpc_errors("RevokeEntry"):
            req = await self._request(stream)
            _required(req.id)
            await stream.send_message(_revoked(await revoke_entry(self._ctx, req.id, reason=req.reason,
                                                                  delete=req.delete, actor=self._actor(stream))))

    async def RevokeAgent(self, stream: Stream[admin_pb2.RevokeAgentRequest, admin_pb2.RevokeResponse]) -> None:
        with grpc_errors("RevokeAgent"):
            req = await self._request(stream)
            agent_id = str(parse_member_id(req.spiffe_id, "spiffe_id", self._ctx.config.trust_domain))
            await stream.send_message(_revoked(await revoke_agent(self._ctx, agent_id, reason=req.reason,
                                                                  actor=self._actor(stream))))

    async def ListRevocations(
        self, stream: Stream[admin_pb2.ListRevocationsRequest, admin_pb2.ListRevocationsResponse]
    ) -> None:
        with grpc_errors("ListRevocations"):
            req = await self._request(stream)
            result = await self._ctx.call(self._ctx.store.list_revocations_page, now=self._ctx.clock.now(),
                                          page=_page(req.page_size, req.page_token))
            await stream.send_message(admin_pb2.ListRevocationsResponse(
                revocations=[revocation_to_proto(r) for r in result.items], next_page_token=result.next_token))

    # -- local authorities -------------------------------------------------------------------

    async def _local_authority(self, stream: Stream[Any, Any], method: str,
                               action: Callable[[AuthorityKind, str], object] | None) -> None:
        with grpc_errors(method):
            req = await self._request(stream)
            try:
                kind = AuthorityKind(req.kind)
            except ValueError:
                raise RequestError("kind", f"must be 'x509' or 'jwt', got {req.kind!r}") from None
            if action is not None:
                await self._ctx.call(action, kind, req.authority_id)
                self._ctx.changes.notify_all()  # the bundle is not in the change log
                await self._audit(stream, method, None, kind=kind.value, authority_id=req.authority_id)
                log.info("local authority changed", extra={"action": method, "kind": kind.value,
                                                           "authority_id": req.authority_id})
            await stream.send_message(admin_pb2.LocalAuthorityResponse(
                authorities=[_authority_to_proto(a) for a in self._ctx.ca.authorities(kind)]))

    async def ShowLocalAuthorities(
        self, stream: Stream[admin_pb2.LocalAuthorityRequest, admin_pb2.LocalAuthorityResponse]
    ) -> None:
        await self._local_authority(stream, "ShowLocalAuthorities", None)

    async def PrepareLocalAuthority(
        self, stream: Stream[admin_pb2.LocalAuthorityRequest, admin_pb2.LocalAuthorityResponse]
    ) -> None:
        await self._local_authority(stream, "PrepareLocalAuthority", lambda kind, _: self._ctx.ca.prepare(kind))

    async def ActivateLocalAuthority(
        self, stream: Stream[admin_pb2.LocalAuthorityRequest, admin_pb2.LocalAuthorityResponse]
    ) -> None:
        await self._local_authority(stream, "ActivateLocalAuthority", self._activate)

    def _activate(self, kind: AuthorityKind, authority_id: str) -> None:
        prepared = [a.authority_id for a in self._ctx.ca.authorities(kind) if a.status is SlotStatus.PREPARED]
        if authority_id and authority_id not in prepared:
            raise FailedPreconditionError(f"ca: {authority_id!r} is not the prepared {kind.value} authority")
        self._ctx.ca.activate(kind)

    async def TaintLocalAuthority(
        self, stream: Stream[admin_pb2.LocalAuthorityRequest, admin_pb2.LocalAuthorityResponse]
    ) -> None:
        await self._local_authority(stream, "TaintLocalAuthority", _required_id(self._ctx.ca.taint))

    async def RevokeLocalAuthority(
        self, stream: Stream[admin_pb2.LocalAuthorityRequest, admin_pb2.LocalAuthorityResponse]
    ) -> None:
        await self._local_authority(stream, "RevokeLocalAuthority", _required_id(self._ctx.ca.revoke))

    # -- operations: agent purge, bundle count, logger -----------------------------------------

    async def PurgeAgents(self, stream: Stream[admin_pb2.PurgeAgentsRequest, admin_pb2.PurgeAgentsResponse]) -> None:
        with grpc_errors("PurgeAgents"):
            req = await self._request(stream)
            if not 0 < req.expired_for <= MAX_PURGE_AGE:
                raise RequestError("expired_for", f"must be within 1..{MAX_PURGE_AGE} seconds, got {req.expired_for}")
            ctx = self._ctx
            cutoff = ctx.clock.now() - timedelta(seconds=req.expired_for)
            stale = await ctx.call(self._stale_agents, cutoff)
            if not req.dry_run:
                for agent in stale:
                    await ctx.call(ctx.store.delete_agent, agent.spiffe_id)
                if stale:
                    ctx.changes.notify()
                    log.info("agents purged", extra={"count": len(stale), "expired_for": req.expired_for})
                    await self._ctx.guard.record([
                        build_event(now=ctx.clock.now(), actor=self._actor(stream), spiffe_id=a.spiffe_id,
                                    selectors=(), decision="allow", reason="admin change", method="PurgeAgents",
                                    details={"expired_for": req.expired_for}) for a in stale])
            await stream.send_message(admin_pb2.PurgeAgentsResponse(agents=[agent_to_proto(a) for a in stale]))

    def _stale_agents(self, cutoff: datetime) -> list[AttestedAgent]:
        """Blocking: agents whose SVID expired before ``cutoff`` and that hold no newer one, banned ones aside.

        A banned agent stays: deleting its record would lift the ban.
        """
        store, token = self._ctx.store, ""
        out: list[AttestedAgent] = []
        while True:
            page = store.list_agents(AgentFilter(expires_before=cutoff, banned=False),
                                     Page(token=token, size=MAX_PAGE_SIZE))
            out.extend(a for a in page.items if a.new_expires_at is None or a.new_expires_at < cutoff)
            if not page.next_token:
                return out
            token = page.next_token

    async def CountBundles(self, stream: Stream[admin_pb2.CountRequest, admin_pb2.CountResponse]) -> None:
        with grpc_errors("CountBundles"):
            await self._request(stream)
            own = self._ctx.config.trust_domain.name
            stored = await self._ctx.call(self._ctx.store.list_bundles)
            count = 1 + sum(1 for b in stored if b.trust_domain != own)  # ours is always there
            await stream.send_message(admin_pb2.CountResponse(count=count))

    def _logger(self) -> admin_pb2.Logger:
        level = logging.getLogger().getEffectiveLevel()
        return admin_pb2.Logger(current_level=logging.getLevelName(level).lower(),
                                launch_level=self._ctx.config.log_level)

    async def GetLogger(self, stream: Stream[admin_pb2.GetLoggerRequest, admin_pb2.Logger]) -> None:
        with grpc_errors("GetLogger"):
            await self._request(stream)
            await stream.send_message(self._logger())

    async def SetLogLevel(self, stream: Stream[admin_pb2.SetLogLevelRequest, admin_pb2.Logger]) -> None:
        with grpc_errors("SetLogLevel"):
            req = await self._request(stream)
            level = LOG_LEVEL_NAMES.get(req.level.lower())
            if level is None:
                raise RequestError("level", f"must be one of debug, info, warning (warn), error; got {req.level!r}")
            await self._set_level(stream, "SetLogLevel", level)

    async def ResetLogLevel(self, stream: Stream[admin_pb2.ResetLogLevelRequest, admin_pb2.Logger]) -> None:
        with grpc_errors("ResetLogLevel"):
            await self._request(stream)
            await self._set_level(stream, "ResetLogLevel", LOG_LEVEL_NAMES[self._ctx.config.log_level])

    async def _set_level(self, stream: Stream[Any, admin_pb2.Logger], method: str, level: int) -> None:
        name = logging.getLevelName(level).lower()
        log.warning("log level set", extra={"level": name, "actor": self._actor(stream)})  # before an "error" hides it
        logging.getLogger().setLevel(level)  # the process-wide root logger: the level the server logs at
        await self._audit(stream, method, None, level=name)
        await stream.send_message(self._logger())


    # -- approvals inbox and console logins ------------------------------------------------

    async def ListPendingApprovals(
        self, stream: Stream[admin_pb2.ListPendingApprovalsRequest, admin_pb2.ListPendingApprovalsResponse]
    ) -> None:
        with grpc_errors("ListPendingApprovals"):
            await self._request(stream)
            ctx = self._ctx
            rules = approval_rules(ctx.guard.policy)
            items: list[admin_pb2.PendingApproval] = []
            if rules:
                since = ctx.clock.now() - INBOX_WINDOW
                denials = await ctx.call(ctx.store.list_audit_recent, AuditFilter(since=since, decision="deny"),
                                         limit=INBOX_SCAN)
                decisions = await ctx.call(ctx.store.list_approval_decisions)
                items = [admin_pb2.PendingApproval(
                    entry_id=p.entry_id, spiffe_id=p.spiffe_id, rule=p.rule, reason=p.reason,
                    audiences=list(p.audiences), method=p.method, last_denied_at=ts(p.last_denied_at), count=p.count,
                    label=p.label, value=p.value, reporter=p.reporter, through_seq=p.through_seq)
                    for p in pending_approvals(map(self._denial, denials), decisions, rules)]
            await stream.send_message(admin_pb2.ListPendingApprovalsResponse(items=items))

    def _denial(self, record: AuditRecord) -> Denial | None:
        return self._denials.get_or_build((record.seq, record.hash), lambda: denial_of(record))

    def _approval_rule(self, name: str) -> tuple[str, str]:
        rule = approval_rules(self._ctx.guard.policy).get(_required(name, "rule"))
        if rule is None:
            raise RequestError("rule", f"{name!r} is not an approval rule of the policy in force")
        return rule.label, rule.value

    async def ApproveRequest(self, stream: Stream[admin_pb2.ApproveRequestRequest, types_pb2.Entry]) -> None:
        with grpc_errors("ApproveRequest"):
            req = await self._request(stream)
            _required(req.entry_id, "entry_id")
            label, value = self._approval_rule(req.rule)
            try:
                ttl = check_approval_ttl(req.ttl)
            except ValueError as err:
                raise RequestError("ttl", str(err)) from None
            ctx, actor, now = self._ctx, self._actor(stream), self._ctx.clock.now()
            stored = await ctx.call(ctx.store.get_entry, req.entry_id)
            expires_at = now + timedelta(seconds=ttl)
            # the expiry is stored before the label: a crash in between leaves no label without one
            await ctx.call(ctx.store.grant_label, LabelGrant(entry_id=stored.id, key=label, value=value,
                                                             expires_at=expires_at, granted_by=actor))
            updated = await ctx.call(ctx.store.update_entry, patch_entry(
                stored, set_labels={label: value}, remove_labels=[], clear_quarantine=False))
            ctx.changes.notify()
            await ctx.call(ctx.store.record_approval_decision, ApprovalDecision(
                entry_id=stored.id, rule=req.rule, decision="approved", operator=actor, decided_at=now,
                through_seq=max(req.through_seq, 0)))
            log.info("request approved", extra={"entry_id": stored.id, "rule": req.rule, "ttl": ttl})
            await self._audit(stream, "ApproveRequest", updated.spiffe_id, entry_id=updated.id, rule=req.rule,
                              set_labels={label: value}, expires_at=ts(expires_at), through_seq=req.through_seq)
            await stream.send_message(entry_to_proto(updated))

    async def RejectRequest(self, stream: Stream[admin_pb2.RejectRequestRequest,
                                                 admin_pb2.RejectRequestResponse]) -> None:
        with grpc_errors("RejectRequest"):
            req = await self._request(stream)
            _required(req.entry_id, "entry_id")
            self._approval_rule(req.rule)
            reason = check_reason(req.reason or "rejected by an operator")
            ctx, actor = self._ctx, self._actor(stream)
            stored = await ctx.call(ctx.store.get_entry, req.entry_id)
            await ctx.call(ctx.store.record_approval_decision, ApprovalDecision(
                entry_id=stored.id, rule=req.rule, decision="rejected", operator=actor, decided_at=ctx.clock.now(),
                through_seq=max(req.through_seq, 0)))
            await self._audit(stream, "RejectRequest", stored.spiffe_id, entry_id=stored.id, rule=req.rule,
                              reject_reason=reason, through_seq=req.through_seq)
            await stream.send_message(admin_pb2.RejectRequestResponse())

    async def CreateConsoleLogin(self, stream: Stream[admin_pb2.CreateConsoleLoginRequest,
                                                      admin_pb2.CreateConsoleLoginResponse]) -> None:
        with grpc_errors("CreateConsoleLogin"):
            req = await self._request(stream)
            logins = self._ctx.console_logins
            if logins is None:
                raise FailedPreconditionError("console: the web console is not enabled ([console] in the config)")
            user = _required(req.user, "user")
            if len(user) > 64 or not user.isprintable():
                raise RequestError("user", "at most 64 printable characters")
            url, expires_at = logins.issue(user, readonly=req.readonly)
            await self._audit(stream, "CreateConsoleLogin", None, user=user, readonly=req.readonly,
                              expires_at=ts(expires_at))  # never the link: it holds the token
            await stream.send_message(admin_pb2.CreateConsoleLoginResponse(url=url, expires_at=ts(expires_at)))


async def expire_label_grants(ctx: ServerContext) -> int:
    """Remove the labels whose grant lapsed (each audited as the server's change); returns how many."""
    due = await ctx.call(ctx.store.due_label_grants, now=ctx.clock.now())
    removed = []
    for grant in due:
        try:
            stored = await ctx.call(ctx.store.get_entry, grant.entry_id)
        except SpiffeError:  # the entry is gone: nothing to remove
            stored = None
        if stored is not None and stored.labels.get(grant.key) == grant.value:
            updated = await ctx.call(ctx.store.update_entry, patch_entry(
                stored, set_labels={}, remove_labels=[grant.key], clear_quarantine=False))
            removed.append(updated)
            ctx.changes.notify()
        await ctx.call(ctx.store.delete_label_grant, grant.entry_id, grant.key)
    if removed:
        now = ctx.clock.now()
        await ctx.guard.record([build_event(now=now, actor="server", spiffe_id=e.spiffe_id, selectors=(),
                                            decision="allow", reason="label grant expired", method="LabelExpired",
                                            details={"entry_id": e.id}) for e in removed])
        log.info("label grants expired", extra={"count": len(removed)})
    return len(removed)


def _check_role(method: str, actor: str, *, readonly: bool) -> None:
    """An admin_readonly caller may only call the read methods."""
    if readonly and method not in READ_METHODS:
        raise AuthorizationError(f"admin: {actor!r} has the admin_readonly role; {method or 'this call'} changes state")


def _revoked(revs: Sequence[Revocation]) -> admin_pb2.RevokeResponse:
    return admin_pb2.RevokeResponse(revocations=[revocation_to_proto(r) for r in revs])


def _required_id(action: Callable[[AuthorityKind, str], None]) -> Callable[[AuthorityKind, str], None]:
    def checked(kind: AuthorityKind, authority_id: str) -> None:
        action(kind, _required(authority_id, "authority_id"))
    return checked


def _authority_to_proto(info: AuthorityInfo) -> admin_pb2.LocalAuthority:
    return admin_pb2.LocalAuthority(authority_id=info.authority_id, status=info.status.value,
                                    not_before=ts(info.not_before), not_after=ts(info.not_after),
                                    tainted=info.tainted)


def check_federates_with(entry: RegistrationEntry, known: frozenset[str]) -> None:
    """An entry may only federate with a trust domain that has a bundle or a federation relationship."""
    for name in entry.federates_with:
        if name not in known:
            raise RequestError("entry.federates_with", f"no bundle and no federation relationship for {name!r}; "
                                                       "create one first (bundle set or federation create)")


def relationship_to_proto(status: RelationshipStatus) -> admin_pb2.FederationRelationship:
    """A relationship with its refresh state, on the wire."""
    rel = status.relationship
    return admin_pb2.FederationRelationship(
        trust_domain=rel.trust_domain.name, bundle_endpoint_url=rel.bundle_endpoint_url,
        bundle_endpoint_profile=rel.profile.value, endpoint_spiffe_id=str(rel.endpoint_spiffe_id or ""),
        source=rel.source, last_refresh=0 if status.last_refresh is None else int(status.last_refresh.timestamp()),
        last_error=status.last_error,
        next_refresh=0 if status.next_refresh is None else int(status.next_refresh.timestamp()),
        bundle_sequence=-1 if status.bundle_sequence is None else min(status.bundle_sequence, 2**63 - 1))


def check_audience(values: Any) -> tuple[str, ...]:
    """Audience list: 1..32 non-empty values of at most 256 characters."""
    audience = tuple(values)
    if not audience:
        raise RequestError("audience", "at least one audience is required")
    if len(audience) > MAX_AUDIENCES or any(not a or len(a) > MAX_AUDIENCE_LEN for a in audience):
        raise RequestError("audience", f"at most {MAX_AUDIENCES} non-empty values of <= {MAX_AUDIENCE_LEN} characters")
    return audience


async def federated_bundles(ctx: ServerContext) -> list[types_pb2.Bundle]:
    """Every stored bundle except our own, on the wire."""
    out = []
    for record in await ctx.call(ctx.store.list_bundles):
        if record.trust_domain == ctx.config.trust_domain.name:
            continue
        try:
            out.append(bundle_to_proto(SpiffeBundle.parse(TrustDomain.parse(record.trust_domain), record.data)))
        except (SpiffeError, InvalidSvidError):
            log.warning("skipping unparsable stored bundle", extra={"trust_domain": record.trust_domain})
    return out
