"""The Agent API: node attestation, agent SVID renewal, pushed entry sync and workload signing.

Every call except AttestAgent re-verifies the caller's mTLS SVID against the current bundle
and refuses unknown, evicted or banned agents with PERMISSION_DENIED, as well as an agent SVID
that is neither the agent's current one nor the one its last renewal issued (SPIRE parity).
ForwardAudit also accepts the workloads listed in ``[audit] forwarders`` (the broker)::

    server = Server([AgentService(ctx)])
    await server.start(cfg.bind_address, cfg.bind_port, ssl=tls.server_context)
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from cryptography import x509
from grpclib.server import Stream

from spiffe_py._memo import Identity, Memo
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2, types_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIBase
from spiffe_py.errors import AuthorizationError, SpiffeError
from spiffe_py.spiffeid import SpiffeId
from spiffe_server.api.admin_service import check_audience, federated_bundles
from spiffe_server.api.context import ServerContext
from spiffe_server.api.convert import bundle_to_proto, certs_to_der, check_dns_names, entry_to_proto, jwt_claims_of
from spiffe_server.api.entryfeed import Watch
from spiffe_server.api.errors import RequestError, grpc_errors, recv_request, to_grpc_error
from spiffe_server.api.peer import peer_leaf, verify_peer_svid
from spiffe_server.api.revocation_hub import RevocationSnapshot
from spiffe_server.api.revocations import X509IssuanceLog, revoke_entry, revoke_own
from spiffe_server.api.sync import SyncState, own_bundle
from spiffe_server.authz import check_entry_authorized
from spiffe_server.ca.pool import CsrRefused, Failed, Outcome, Signed, SignItem
from spiffe_server.ca.signer import SignedSvid, X509Authority, public_key_from_csr
from spiffe_server.ca.templates import JwtSvidParams, SvidKind, X509SvidParams
from spiffe_server.datastore import (
    AttestedAgent,
    ConflictError,
    Issuance,
    NotFoundError,
    RegistrationEntry,
    RevocationKind,
)
from spiffe_server.entryindex import advance
from spiffe_server.errors import AttestationError, FailedPreconditionError, InvalidCsrError
from spiffe_server.guard import CsrBatch
from spiffe_server.metrics import AGENTS_SYNCING, SIGN_LATENCY, SIGNED
from spiffe_server.nodeattest.base import AttestResult
from spiffe_server.revocation import check_reason, jwt_issuance, serial_hex, x509_issuance

log = logging.getLogger("spiffe_server.agent_api")

MAX_BATCH = 500
RESULT_SLICE = 50  # results built between yields to the event loop (about 2-5 ms of work)
CHALLENGE_TIMEOUT = 30.0
PROMOTE_ATTEMPTS = 3  # compare-and-set rounds before a racing update is reported as ABORTED

T = TypeVar("T")


class SerialCheck(enum.Enum):
    """What to do with a call authenticated by an agent SVID with a given serial."""

    ACCEPT = "accept"  # the agent's current SVID
    PROMOTE = "promote"  # the SVID the last renewal issued, used for the first time: it becomes current
    REFUSE = "refuse"  # any other (older, or never issued to this agent)


def decide_agent_serial(presented: str, *, current: str, new: str) -> SerialCheck:
    """Pure: accept the current serial, promote the pending one, refuse the rest (SPIRE's agent authorizer).

    Both are accepted after a renewal because the agent may still have calls in flight with the
    old SVID, or may crash before it saves the new one.
    """
    if presented and presented == current:
        return SerialCheck.ACCEPT
    if presented and presented == new:
        return SerialCheck.PROMOTE
    return SerialCheck.REFUSE


class ForwarderRefusedError(AuthorizationError):
    """A ForwardAudit caller that is neither an attested agent nor an unrevoked ``[audit] forwarders`` workload."""


class UnknownAgentError(AuthorizationError):
    """The caller's SPIFFE ID is not an attested agent (never attested, or evicted)."""


class StaleAgentSvidError(AuthorizationError):
    """The caller presented an agent SVID that is no longer (or never was) the agent's current one."""

    def __init__(self, agent_id: str, serial: str) -> None:
        self.agent_id = agent_id
        self.serial = serial
        super().__init__(f"agent: agent svid does not match the expected serial number: {agent_id!r}")


@dataclass(frozen=True, slots=True)
class _Caller:
    """An agent authenticated by chain: its SPIFFE ID and the serial (hex) of the SVID it presented."""

    agent_id: str
    serial: str


def entry_end(entry: RegistrationEntry, *, now: datetime) -> datetime | None:
    """The hard end of any SVID for ``entry`` (its expiry or created_at + max_lifetime); raises once passed."""
    ends = [entry.expires_at]
    if entry.max_lifetime:
        ends.append(entry.created_at + timedelta(seconds=entry.max_lifetime))
    present = [e for e in ends if e is not None]
    end = min(present) if present else None
    if end is not None and end <= now:
        raise FailedPreconditionError(f"agent: entry has expired: {entry.id!r}")
    return end


@dataclass(frozen=True, slots=True)
class _EntryPlan:
    """What every X.509-SVID of one entry in a batch shares, worked out once per batch."""

    entry: RegistrationEntry
    expires_at: datetime | None
    requested_ttl: timedelta | None


def _plan_for(entry_id: str, allowed: Mapping[str, RegistrationEntry], plans: dict[str, _EntryPlan | SpiffeError],
              *, now: datetime) -> _EntryPlan | SpiffeError:
    """The plan for ``entry_id`` (memoised in ``plans``), or the error that refuses it."""
    plan = plans.get(entry_id)
    if plan is None:
        try:
            entry = check_entry_authorized(entry_id, allowed)
            try:  # a row stored before DNS names were validated must fail alone, not the batch
                check_dns_names(entry.dns_names, "entry.dns_names")
            except RequestError as err:
                raise FailedPreconditionError(f"agent: entry {entry.id!r} cannot be signed: {err}") from None
            plan = _EntryPlan(entry=entry, expires_at=entry_end(entry, now=now),
                              requested_ttl=timedelta(seconds=entry.x509_svid_ttl) if entry.x509_svid_ttl else None)
        except SpiffeError as err:
            plan = err
        plans[entry_id] = plan
    return plan


class AgentService(AgentAPIBase):
    """grpclib handlers of ``spiffepy.server.v1.AgentAPI``."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        # the wire bundle is rebuilt only when the CA's bundle object is (a new CA state), not per push
        self._bundles: Memo[Identity, types_pb2.Bundle] = Memo(max_size=4)

    # -- caller ------------------------------------------------------------------------------

    async def _agent(self, stream: Stream[Any, Any], method: str) -> AttestedAgent:
        return await self._authenticated(method, self._known_agent_now, self._caller(stream))

    def _caller(self, stream: Stream[Any, Any]) -> _Caller:
        ctx = self._ctx
        leaf = peer_leaf(stream)
        agent_id = verify_peer_svid(leaf, ctx.roots(), ctx.intermediates(), now=ctx.clock.now())
        return _Caller(str(agent_id), serial_hex(leaf.serial_number))

    async def _authenticated(self, method: str, func: Callable[[_Caller], T], caller: _Caller) -> T:
        """Run ``func(caller)`` (which checks the agent first) in one thread hop; audit a stale-SVID refusal."""
        try:
            return await self._ctx.call(func, caller)
        except StaleAgentSvidError as err:
            # Someone holds an agent SVID the agent itself has moved on from: worth a trace.
            log.warning("agent svid refused: not the agent's current svid",
                        extra={"spiffe_id": err.agent_id, "serial": err.serial, "method": method})
            await self._ctx.guard.note(actor=err.agent_id, method=method, spiffe_id=err.agent_id, decision="deny",
                                       reason=str(err), details={"serial": err.serial})
            raise

    def _stored_agent(self, agent_id: str) -> AttestedAgent:
        """Blocking: the attested agent, refusing unknown, evicted or banned ones."""
        try:
            agent = self._ctx.store.get_agent(agent_id)
        except NotFoundError:
            raise UnknownAgentError(f"agent: unknown or evicted agent {agent_id!r}") from None
        if agent.banned:
            raise AuthorizationError(f"agent: agent is banned: {agent_id!r}")
        return agent

    def _check_not_revoked(self, caller: _Caller) -> None:
        """Blocking: refuse an agent SVID that was revoked (``revoke svid --serial``), on every call."""
        if self._ctx.store.is_revoked(RevocationKind.SERIAL, caller.serial):
            raise AuthorizationError(f"agent: agent svid {caller.serial} is revoked: {caller.agent_id!r}")

    def _stored_unrevoked(self, caller: _Caller) -> AttestedAgent:
        """Blocking: :meth:`_stored_agent` and :meth:`_check_not_revoked`, in one thread hop."""
        agent = self._stored_agent(caller.agent_id)
        self._check_not_revoked(caller)
        return agent

    def _known_agent_now(self, caller: _Caller) -> AttestedAgent:
        """Blocking: the attested agent, refusing unknown, evicted or banned ones and stale agent SVIDs.

        The first call with the SVID a renewal issued promotes it (compare-and-set, so servers
        sharing the database agree); from then on the previous SVID is refused.
        """
        store = self._ctx.store
        agent = self._stored_agent(caller.agent_id)
        self._check_not_revoked(caller)
        for _ in range(PROMOTE_ATTEMPTS):
            check = decide_agent_serial(caller.serial, current=agent.serial, new=agent.new_serial)
            if check is SerialCheck.ACCEPT:
                return agent
            if check is SerialCheck.REFUSE:
                raise StaleAgentSvidError(caller.agent_id, caller.serial)
            try:
                promoted = store.promote_agent_serial(agent.spiffe_id, serial=agent.serial, new_serial=caller.serial,
                                                      now=self._ctx.clock.now())
            except ConflictError:  # another server promoted it, or a renewal or re-attestation came first
                agent = self._stored_agent(caller.agent_id)
                continue
            log.info("agent svid promoted", extra={"spiffe_id": agent.spiffe_id, "serial": caller.serial})
            return promoted
        raise ConflictError(f"agent: agent svid serials keep changing, retry: {caller.agent_id!r}")

    def _sign_agent_svid(self, agent_id: SpiffeId, csr: bytes) -> tuple[x509.Certificate, ...]:
        if not csr:
            raise RequestError("csr", "required")
        public_key = public_key_from_csr(csr, spiffe_id=agent_id)
        with SIGN_LATENCY.labels(kind="agent").time():
            chain = self._ctx.ca.sign_x509_svid(X509SvidParams(spiffe_id=agent_id, public_key=public_key,
                                                               kind=SvidKind.AGENT))
        SIGNED.labels(kind="agent").inc()
        return self._ctx.issued_chain(chain)

    # -- AttestAgent ---------------------------------------------------------------------------

    async def AttestAgent(self, stream: Stream[agent_pb2.AttestAgentRequest, agent_pb2.AttestAgentResponse]) -> None:
        with grpc_errors("AttestAgent"):
            ctx = self._ctx
            first = await asyncio.wait_for(stream.recv_message(), CHALLENGE_TIMEOUT)
            if first is None or not first.HasField("params"):
                raise RequestError("params", "the first message must carry attestation params")
            params = first.params
            attestor = ctx.attestors.get(params.attestation_type)
            if attestor is None:
                raise RequestError("params.attestation_type",
                                   f"unsupported attestation type: {params.attestation_type!r}")
            if not params.csr:
                raise RequestError("params.csr", "required")

            async def challenge(data: bytes) -> bytes:
                await stream.send_message(agent_pb2.AttestAgentResponse(challenge=data))
                answer = await asyncio.wait_for(stream.recv_message(), CHALLENGE_TIMEOUT)
                if answer is None or not answer.HasField("challenge_response"):
                    raise AttestationError(attestor.name, "expected a challenge response")
                return bytes(answer.challenge_response)

            try:  # every attestation is audited, refusals too (with the error, never the payload)
                result = await attestor.attest(params.payload, challenge, now=ctx.clock.now())
                chain = self._sign_agent_svid(result.agent_id, params.csr)
                await self._record_agent(result, attestor.name, chain[0])
            except SpiffeError as err:
                await ctx.guard.attested(attestor.name, None, error=str(err))
                raise
            await ctx.guard.attested(attestor.name, str(result.agent_id), selectors=result.selectors,
                                     serial=serial_hex(chain[0].serial_number))
            log.info("agent attested", extra={"spiffe_id": str(result.agent_id), "attestor": attestor.name})
            await stream.send_message(agent_pb2.AttestAgentResponse(result=agent_pb2.AttestResult(
                spiffe_id=str(result.agent_id), svid_chain=certs_to_der(chain), can_reattest=result.can_reattest,
                bundle=bundle_to_proto(ctx.ca.bundle()))))

    async def _record_agent(self, result: AttestResult, attestor: str, leaf: x509.Certificate) -> None:
        ctx = self._ctx
        now = ctx.clock.now()
        agent_id = str(result.agent_id)
        try:
            existing: AttestedAgent | None = await ctx.call(ctx.store.get_agent, agent_id)
        except NotFoundError:
            existing = None
        if existing is not None and existing.banned:
            raise AuthorizationError(f"agent: agent is banned: {agent_id!r}")
        agent = AttestedAgent(spiffe_id=agent_id, attestation_type=attestor, serial=serial_hex(leaf.serial_number),
                              expires_at=leaf.not_valid_after_utc, created_at=now, updated_at=now,
                              selectors=result.selectors, can_reattest=result.can_reattest)
        if existing is None:
            await ctx.call(ctx.store.create_agent, agent)
        else:
            await ctx.call(ctx.store.update_agent, agent)
        await ctx.call(ctx.store.record_issuances, [x509_issuance(leaf, spiffe_id=agent_id, agent_id=agent_id)])
        ctx.changes.notify()

    # -- RenewAgent ------------------------------------------------------------------------------

    async def RenewAgent(self, stream: Stream[agent_pb2.RenewAgentRequest, agent_pb2.RenewAgentResponse]) -> None:
        with grpc_errors("RenewAgent"):
            agent = await self._agent(stream, "RenewAgent")
            req = await recv_request(stream)
            chain = self._sign_agent_svid(SpiffeId.parse(agent.spiffe_id), req.csr)
            leaf = chain[0]
            # The new SVID is pending until the agent first uses it; the current one stays valid
            # meanwhile. A pending one never used is replaced. ABORTED if the current serial
            # changed since this call was authenticated (the agent retries at its next tick).
            await self._ctx.call(self._ctx.store.renew_agent, agent.spiffe_id, serial=agent.serial,
                                 new_serial=serial_hex(leaf.serial_number), new_expires_at=leaf.not_valid_after_utc,
                                 now=self._ctx.clock.now())
            # logged like workload SVIDs, so `revoke svid --serial` and `revoke agent` reach agent SVIDs too
            await self._ctx.call(self._ctx.store.record_issuances, [x509_issuance(
                leaf, spiffe_id=agent.spiffe_id, agent_id=agent.spiffe_id)])
            self._ctx.syncs.synced(agent.spiffe_id, now=self._ctx.clock.now())
            await stream.send_message(agent_pb2.RenewAgentResponse(svid_chain=certs_to_der(chain)))

    # -- SyncAuthorized ----------------------------------------------------------------------------

    async def SyncAuthorized(
        self, stream: Stream[agent_pb2.SyncAuthorizedRequest, agent_pb2.SyncAuthorizedResponse]
    ) -> None:
        with grpc_errors("SyncAuthorized"):
            caller = self._caller(stream)
            await self._authenticated("SyncAuthorized", self._known_agent_now, caller)
            await stream.recv_message()
            watch = self._ctx.changes.subscribe(caller.agent_id)
            AGENTS_SYNCING.inc()
            self._ctx.syncs.opened(caller.agent_id, now=self._ctx.clock.now())
            try:
                await self._push_loop(stream, caller, watch)
            finally:
                AGENTS_SYNCING.dec()
                self._ctx.syncs.closed(caller.agent_id)
                self._ctx.changes.unsubscribe(watch)

    async def _push_loop(self, stream: Stream[Any, Any], caller: _Caller, watch: Watch) -> None:
        """Push the agent's entries: all at first, then only those the index says changed for it."""
        ctx = self._ctx
        state = SyncState()
        generation: int | None = None
        agent: AttestedAgent | None = None
        revoked: RevocationSnapshot | None = None
        while True:
            watch.event.clear()
            if watch.recheck or agent is None or revoked is None:
                watch.recheck = False  # first: a change that lands during the reads sets it again
                # a ban or eviction ends the stream; so does revoking the SVID it opened with
                agent = await ctx.call(self._stored_unrevoked, caller)
                if decide_agent_serial(caller.serial, current=agent.serial,
                                       new=agent.new_serial) is SerialCheck.REFUSE:
                    # Opened with an SVID since superseded. Not PERMISSION_DENIED: the agent takes that for
                    # eviction. It closes such streams itself on renewal; anyone else's ends here.
                    log.info("sync stream ended: its agent svid was superseded",
                             extra={"spiffe_id": caller.agent_id, "serial": caller.serial})
                    return
                revoked = await ctx.revocations.snapshot(ctx)
            # The first sync reads every committed change; later, the feed applied what woke us before waking us.
            index = await (ctx.entries.catch_up() if watch.view is None else ctx.entries.loaded())
            view, changed = advance(index, watch.view, agent.spiffe_id, agent.selectors)
            watch.view = view
            if ctx.guard.policy_generation != generation:  # the TTL in force may have moved for any entry
                generation = ctx.guard.policy_generation
                changed = {**view.allowed, **changed}
            entries = {eid: None if e is None else self._entry_pb(e) for eid, e in changed.items()}
            bundle = self._bundles.get_or_build(Identity(ctx.ca.bundle()), lambda: own_bundle(ctx.ca))
            messages = state.plan_changes(entries, bundle, await self._federated_for(view.federates),
                                          revocations=revoked.revocations, crls=revoked.crls)
            for message in messages:
                await stream.send_message(message)
            if messages:
                ctx.syncs.synced(caller.agent_id, now=ctx.clock.now())
            await watch.event.wait()

    def _entry_pb(self, entry: RegistrationEntry) -> types_pb2.Entry:
        pb = entry_to_proto(entry)
        pb.x509_svid_ttl_in_force = self._ctx.guard.x509_ttl_in_force(entry)  # agents re-mint what outlives it
        return pb

    async def _federated_for(self, wanted: Collection[str]) -> list[Any]:
        if not wanted:
            return []
        return [b for b in await federated_bundles(self._ctx) if b.trust_domain in wanted]

    # -- signing -------------------------------------------------------------------------------------

    async def BatchNewX509SVID(
        self, stream: Stream[agent_pb2.BatchNewX509SVIDRequest, agent_pb2.BatchNewX509SVIDResponse]
    ) -> None:
        with grpc_errors("BatchNewX509SVID"):
            caller = self._caller(stream)
            agent_id = caller.agent_id
            req = await stream.recv_message()
            agent = await self._authenticated("BatchNewX509SVID", self._known_agent_now, caller)
            if req is None or not req.params:
                raise RequestError("params", "at least one item is required")
            if len(req.params) > MAX_BATCH:
                raise RequestError("params", f"at most {MAX_BATCH} items per batch, got {len(req.params)}")
            allowed = await self._entitled(agent, (p.entry_id for p in req.params))
            plans: dict[str, _EntryPlan | SpiffeError] = {}
            now = self._ctx.clock.now()
            self._ctx.sign_limiter.take(agent_id, len(req.params), now=now)  # RESOURCE_EXHAUSTED past the rate
            gate = self._ctx.guard.batch(actor=agent_id)  # policy per entry, audit per batch
            ledger = X509IssuanceLog(agent_id=agent_id)
            issued: list[Issuance] = []
            item_plans = [_plan_for(p.entry_id, allowed, plans, now=now) for p in req.params]
            authority, outcomes = await self._sign_batch(req.params, item_plans, gate, now=now)
            results = []
            for index, (p, plan, outcome) in enumerate(zip(req.params, item_plans, outcomes, strict=True), 1):
                results.append(self._sign_result(p, plan, outcome, authority=authority, gate=gate, ledger=ledger,
                                                 issued=issued))
                if index % RESULT_SLICE == 0:
                    await asyncio.sleep(0)  # let other RPCs run between slices of a large batch
            # Audit records and issuance log in one transaction, before anything is sent.
            await gate.commit(issued)
            if issued:
                SIGNED.labels(kind="x509").inc(len(issued))
                self._ctx.syncs.synced(agent_id, now=self._ctx.clock.now())
            await stream.send_message(agent_pb2.BatchNewX509SVIDResponse(results=results))

    async def _entitled(self, agent: AttestedAgent, entry_ids: Iterable[str]) -> dict[str, RegistrationEntry]:
        """Of ``entry_ids``, the entries ``agent`` may act for now, from the index (brought up to date first).

        The caller reads the agent fresh on every call and the index catches up with every committed
        change, so a ban, eviction, agent SVID or entry change applies to the next call.
        """
        index = await self._ctx.entries.catch_up()
        known: set[str] = set()
        allowed: dict[str, RegistrationEntry] = {}
        for entry_id in set(entry_ids):
            entry = index.entitled(entry_id, agent.spiffe_id, agent.selectors, known)
            if entry is not None:
                allowed[entry_id] = entry
        return allowed

    async def _sign_batch(self, params: Sequence[agent_pb2.NewX509SVIDParams],
                          item_plans: Sequence[_EntryPlan | SpiffeError], gate: CsrBatch, *, now: datetime,
                          ) -> tuple[X509Authority | SpiffeError, list[Outcome | None]]:
        """Verify every CSR with a plan and sign those the policy allows, off the event loop (ctx.signer)."""
        ca = self._ctx.ca
        try:
            authority: X509Authority | SpiffeError = ca.active_x509_ca()
        except SpiffeError as err:  # each item reports it, after its CSR and policy checks
            authority = err
        usable = authority if isinstance(authority, X509Authority) else None
        default_ttl = ca.policy.default_x509_ttl(SvidKind.WORKLOAD)
        items: list[SignItem] = []
        where: list[int] = []
        for index, (param, plan) in enumerate(zip(params, item_plans, strict=True)):
            if isinstance(plan, SpiffeError):
                continue
            allowed, ttl = gate.allows(plan.entry, plan.requested_ttl)  # a denied entry's CSRs are only verified
            items.append(SignItem(csr=bytes(param.csr), spiffe_id=plan.entry.spiffe_id, sign=allowed and bool(usable),
                                  ttl=default_ttl if ttl is None else ttl, dns_names=tuple(plan.entry.dns_names),
                                  expires_at=plan.expires_at))
            where.append(index)
        outcomes: list[Outcome | None] = [None] * len(params)
        if items:
            with SIGN_LATENCY.labels(kind="x509").time():
                signed = await self._ctx.signer.sign(usable, items, subject=ca.policy.svid_subject, now=now,
                                                     keep=ca.x509_signers())
            for index, outcome in zip(where, signed, strict=True):
                outcomes[index] = outcome
        return authority, outcomes

    def _sign_result(self, params: agent_pb2.NewX509SVIDParams, plan: _EntryPlan | SpiffeError,
                     outcome: Outcome | None, *, authority: X509Authority | SpiffeError, gate: CsrBatch,
                     ledger: X509IssuanceLog, issued: list[Issuance]) -> agent_pb2.X509SVIDResult:
        """One CSR's result, checked in the order plan, CSR, policy, CA; its issuance record goes to ``issued``."""
        try:
            if isinstance(plan, SpiffeError):
                raise plan
            if isinstance(outcome, CsrRefused):
                raise InvalidCsrError(outcome.message)
            gate.check(plan.entry, plan.requested_ttl)  # policy, counted per item
            if isinstance(authority, SpiffeError):
                raise authority
            if not isinstance(outcome, Signed):  # the worker failed: INTERNAL (logged, no text in the reply)
                raise RuntimeError(outcome.error if isinstance(outcome, Failed) else "the signer returned no leaf")
            svid = SignedSvid(chain=(x509.load_der_x509_certificate(outcome.der), *authority.chain), der=outcome.der)
        except Exception as err:  # fails this item only: the batch's other entries still get SVIDs
            mapped = to_grpc_error(err, "BatchNewX509SVID")
            return agent_pb2.X509SVIDResult(entry_id=params.entry_id, status_code=mapped.status.value,
                                            status_message=mapped.message or "")
        issued.append(ledger.issuance(svid.chain, spiffe_id=plan.entry.spiffe_id, entry_id=plan.entry.id))
        return agent_pb2.X509SVIDResult(entry_id=params.entry_id, cert_chain=self._ctx.issued_chain_der(svid))

    async def NewJWTSVID(self, stream: Stream[agent_pb2.NewJWTSVIDRequest, agent_pb2.NewJWTSVIDResponse]) -> None:
        with grpc_errors("NewJWTSVID"):
            caller = self._caller(stream)
            agent_id = caller.agent_id
            agent = await self._authenticated("NewJWTSVID", self._known_agent_now, caller)
            req = await recv_request(stream)
            allowed = await self._entitled(agent, [req.entry_id])
            audience = check_audience(req.audience)
            entry = check_entry_authorized(req.entry_id, allowed)
            self._ctx.sign_limiter.take(agent_id, 1, now=self._ctx.clock.now())
            end = entry_end(entry, now=self._ctx.clock.now())
            mint = self._ctx.guard.agent_jwt_request(actor=agent_id, entry=entry, audiences=audience)
            def sign(ttl: timedelta | None) -> str:
                with SIGN_LATENCY.labels(kind="jwt").time():
                    return self._ctx.ca.sign_jwt_svid(JwtSvidParams(
                        spiffe_id=SpiffeId.parse(entry.spiffe_id), audience=audience, expires_at=end, ttl=ttl,
                        extra_claims=dict(entry.jwt_claims)))

            token = await self._ctx.guard.mint_jwt(  # policy + audit + issuance log, one transaction
                mint, sign, lambda tok: jwt_issuance(jwt_claims_of(tok), entry_id=entry.id, agent_id=agent_id))
            SIGNED.labels(kind="jwt").inc()
            self._ctx.syncs.synced(agent_id, now=self._ctx.clock.now())
            claims = jwt_claims_of(token)
            await stream.send_message(agent_pb2.NewJWTSVIDResponse(token=token, expires_at=int(claims["exp"]),
                                                                   issued_at=int(claims.get("iat", 0)),
                                                                   jti=str(claims["jti"])))

    # -- RevokeOwn -----------------------------------------------------------------------------------

    async def RevokeOwn(self, stream: Stream[agent_pb2.RevokeOwnRequest, agent_pb2.RevokeOwnResponse]) -> None:
        with grpc_errors("RevokeOwn"):
            agent = await self._agent(stream, "RevokeOwn")
            req = await recv_request(stream)
            revs = await revoke_own(self._ctx, agent.spiffe_id, serials=list(req.x509_serials),
                                    jtis=list(req.jwt_ids), reason=req.reason)
            await stream.send_message(agent_pb2.RevokeOwnResponse(revoked=len(revs)))

    # -- ForwardAudit ------------------------------------------------------------------------

    async def ForwardAudit(self, stream: Stream[agent_pb2.ForwardAuditRequest, agent_pb2.ForwardAuditResponse]
                           ) -> None:
        with grpc_errors("ForwardAudit"):
            caller = self._caller(stream)
            try:
                source = await self._authenticated("ForwardAudit", self._audit_source_now, caller)
            except ForwarderRefusedError as err:
                await self._ctx.guard.note(actor=caller.agent_id, method="ForwardAudit", spiffe_id=caller.agent_id,
                                           decision="deny", reason=str(err), details={"serial": caller.serial})
                raise
            req = await recv_request(stream)
            accepted = await self._ctx.call(self._ctx.guard.audit.forward, source, list(req.records))
            await stream.send_message(agent_pb2.ForwardAuditResponse(accepted=accepted))

    def _audit_source_now(self, caller: _Caller) -> str:
        """Blocking: whose sub-chain the caller forwards: an attested agent's, or a listed forwarder's (``[audit]``).

        A forwarder is a workload (the broker): its SVID chained to our bundle (``_caller``) and must
        not be revoked; it has no agent record, so no serial history to check.
        """
        if caller.agent_id in self._ctx.config.audit.forwarders:
            if self._ctx.store.is_revoked(RevocationKind.SERIAL, caller.serial):
                raise ForwarderRefusedError(f"audit: forwarder svid {caller.serial} is revoked: {caller.agent_id!r}")
            return caller.agent_id
        try:
            return self._known_agent_now(caller).spiffe_id
        except UnknownAgentError:
            raise ForwarderRefusedError(f"audit: {caller.agent_id!r} may not forward audit records: it is not an "
                                        "attested agent and not listed in [audit] forwarders") from None

    # -- QuarantineOwn (agent anomaly guardrail) ---------------------------------------------

    async def QuarantineOwn(self, stream: Stream[agent_pb2.QuarantineOwnRequest, agent_pb2.QuarantineOwnResponse]
                            ) -> None:
        with grpc_errors("QuarantineOwn"):
            caller = self._caller(stream)
            agent_id = caller.agent_id
            agent = await self._authenticated("QuarantineOwn", self._known_agent_now, caller)
            req = await recv_request(stream)
            allowed = await self._entitled(agent, [req.entry_id])
            entry = check_entry_authorized(req.entry_id, allowed)
            reason = f"agent anomaly: {req.reason or 'no reason given'}"
            ctx = self._ctx
            await ctx.guard.quarantine(ctx.store, entry.id, reason=check_reason(reason), actor=agent_id)
            # revoke_entry wakes the SyncAuthorized streams, which then see the quarantine too
            revs = await revoke_entry(ctx, entry.id, reason=f"quarantined: {reason}"[:256], delete=False,
                                      actor=agent_id)
            await stream.send_message(agent_pb2.QuarantineOwnResponse(revoked=len(revs)))
