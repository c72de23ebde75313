"""Request-time policy and audit on every mint the server makes, plus entry quarantine.

Handlers hand the guard what is being minted and a signing callback; the guard refuses
quarantined entries, evaluates the policy, caps the TTL with the policy's ``max_ttl``, signs,
and appends one audit record per decision (allow with the serial/jti, or deny with the reason);
an allowed mint's issuance-log record is written in the same transaction as its audit record::

    guard = ctx.guard                                    # built once per ServerContext
    token = await guard.mint_jwt(MintRequest(rpc="NewJWTSVID", method=Method.MINT_JWT_SVID,
                                             actor=agent_id, spiffe_id=sid, entries=(entry,),
                                             audiences=("payments",)),
                                 lambda ttl: ctx.ca.sign_jwt_svid(JwtSvidParams(..., ttl=ttl)),
                                 lambda token: jwt_issuance(jwt_claims_of(token), ...))

    gate = guard.batch(actor=agent_id)                   # BatchNewX509SVID: decide once per entry
    ttl = gate.check(entry, requested_ttl)               # capped TTL, or AuthorizationError
    await gate.commit(issuances)                         # records + issuance log: one transaction

A denial raises :class:`spiffe_py.errors.AuthorizationError` (PERMISSION_DENIED) whose message
holds the rule's reason. If the audit record cannot be written the mint fails too (fail closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from prometheus_client import Counter

from spiffe_py._policy import (
    ALLOW_ALL,
    EMPTY_POLICY,
    QUARANTINE_REASON_LABEL,
    QUARANTINE_RULE,
    Decision,
    EntryFacts,
    Method,
    Policy,
    PolicyError,
    PolicyHolder,
    WorkloadFacts,
    build_input,
)
from spiffe_py.audit import AuditEvent, build_event
from spiffe_py.clock import Clock
from spiffe_py.errors import AuthorizationError
from spiffe_server.audit import CHECKPOINT_KEY_FILE, CentralAudit, CheckpointSigner
from spiffe_server.config import ServerConfig
from spiffe_server.datastore import DataStore, EntryFilter, Issuance, Page, RegistrationEntry, RevocationKind
from spiffe_server.datastore.models import MAX_PAGE_SIZE
from spiffe_server.metrics import POLICY_DECISIONS, POLICY_DENIALS, POLICY_FILE_REFUSED, POLICY_RELOADS, QUARANTINES

log = logging.getLogger("spiffe_server.guard")

MAX_SERIALS_PER_RECORD = 100
MAX_TTL_MEMO = 200_000  # entries whose X.509 TTL in force is remembered
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MintRequest:
    """What is about to be minted, and for whom.

    ``entries`` are the registration entries the SVID is minted for: the one entry of an agent
    request, or for admin mints every entry whose SPIFFE ID equals the minted one (possibly none).
    """

    rpc: str
    method: Method
    actor: str
    spiffe_id: str
    entries: tuple[RegistrationEntry, ...] = ()
    audiences: tuple[str, ...] = ()
    requested_ttl: timedelta | None = None


def entry_task_end(entry: RegistrationEntry) -> datetime | None:
    """When the entry's task ends: its expiry or ``created_at + max_lifetime``, whichever is first."""
    ends = [entry.expires_at]
    if entry.max_lifetime:
        ends.append(entry.created_at + timedelta(seconds=entry.max_lifetime))
    present = [e for e in ends if e is not None]
    return min(present) if present else None


def policy_document(req: MintRequest, entry: RegistrationEntry | None, *, now: datetime) -> dict[str, Any]:
    """The CEL input for one (request, entry) pair; ``workload`` holds the entry's selectors on the server."""
    facts = EntryFacts() if entry is None else EntryFacts(
        id=entry.id, spiffe_id=entry.spiffe_id, x509_svid_ttl=entry.x509_svid_ttl, jwt_svid_ttl=entry.jwt_svid_ttl,
        labels=entry.labels)
    selectors = () if entry is None else entry.selectors
    return build_input(
        now=now, method=req.method, workload=WorkloadFacts(spiffe_id=req.spiffe_id, selectors=selectors), entry=facts,
        audiences=req.audiences, requested_spiffe_id=req.spiffe_id,
        task_started_at=None if entry is None else entry.created_at,
        task_expires_at=None if entry is None else entry_task_end(entry))


def quarantine_decision(entries: Iterable[RegistrationEntry]) -> Decision | None:
    """A deny if any entry is quarantined."""
    for entry in entries:
        if entry.quarantined:
            why = entry.labels.get(QUARANTINE_REASON_LABEL) or "no reason recorded"
            return Decision(allowed=False, reason=f"entry quarantined: {why}", rule=QUARANTINE_RULE)
    return None


def decide(policy: Policy, req: MintRequest, *, now: datetime) -> Decision:
    """Quarantine first, then the policy once per entry: any deny denies; the smallest max_ttl wins."""
    quarantined = quarantine_decision(req.entries)
    if quarantined is not None:
        return quarantined
    if not policy.rules:  # nothing to evaluate: no documents to build
        return ALLOW_ALL
    decisions = [policy.evaluate(policy_document(req, e, now=now)) for e in (req.entries or (None,))]
    denied = next((d for d in decisions if not d.allowed), None)
    if denied is not None:
        return denied
    capped = [d for d in decisions if d.max_ttl is not None]
    return min(capped, key=lambda d: d.max_ttl or timedelta.max) if capped else decisions[0]


def capped_ttl(requested: timedelta | None, default: timedelta, decision: Decision) -> timedelta | None:
    """The TTL to sign with: the request's (or the default) shortened to the decision's ``max_ttl``."""
    if decision.max_ttl is None:
        return requested
    return min(requested or default, decision.max_ttl)


def _decision_event(req: MintRequest, decision: Decision, *, now: datetime, serial: str | None = None,
                    jti: str | None = None, ttl: timedelta | None = None, items: int | None = None,
                    serials: Sequence[str] = ()) -> AuditEvent:
    details: dict[str, Any] = {"entry_ids": [e.id for e in req.entries], "policy_method": str(req.method)}
    if items is not None:
        details["items"] = items
    if serials:
        details["serials"] = list(serials)
    if decision.rule is not None:
        details["rule"] = decision.rule
    if req.audiences:
        details["audiences"] = list(req.audiences)
    if ttl is not None:
        details["ttl"] = int(ttl.total_seconds())
    selectors = sorted({str(s) for e in req.entries for s in e.selectors})
    return build_event(now=now, actor=req.actor, spiffe_id=req.spiffe_id, selectors=selectors,
                       decision="allow" if decision.allowed else "deny", reason=decision.reason, method=req.rpc,
                       serial=serial, jti=jti, details=details)


def _counters(req: MintRequest, decision: Decision) -> tuple[Counter, ...]:
    """The metric children one decision increments (labelled once, incremented per item)."""
    decided = POLICY_DECISIONS.labels(method=req.rpc, decision="allow" if decision.allowed else "deny")
    if decision.allowed:
        return (decided,)
    return decided, POLICY_DENIALS.labels(method=req.rpc, rule=decision.rule or "")


def _count(req: MintRequest, decision: Decision) -> None:
    for counter in _counters(req, decision):
        counter.inc()


def denial(decision: Decision) -> AuthorizationError:
    """The PERMISSION_DENIED error for a deny decision; its message carries the reason."""
    if decision.rule == QUARANTINE_RULE:
        return AuthorizationError(decision.reason)
    return AuthorizationError(f"policy: denied by rule {decision.rule!r}: {decision.reason}")


class Guard:
    """Policy in force + the central audit chain; one per server."""

    def __init__(self, *, policy: PolicyHolder | None, audit: CentralAudit, clock: Clock,
                 default_x509_ttl: timedelta, default_jwt_ttl: timedelta) -> None:
        self._holder = policy
        self.audit = audit
        self._clock = clock
        self.default_x509_ttl = default_x509_ttl
        self.default_jwt_ttl = default_jwt_ttl
        self._announced = self.policy_generation  # the generation the sync streams were last woken for
        # entry id -> (revision, policy generation, X.509 TTL in force): see x509_ttl_in_force
        self._ttls: dict[str, tuple[int, int, int]] = {}

    @classmethod
    def from_config(cls, cfg: ServerConfig, store: DataStore, clock: Clock) -> Guard:
        """The guard for ``cfg.policy_file`` (none: allow all) over ``store``'s audit chain.

        Raises:
            PolicyError: the policy file cannot be loaded at start.
        """
        holder = None if cfg.policy_file is None else load_holder(cfg.policy_file, clock)
        signer = CheckpointSigner.load_or_create(cfg.data_dir / "keys" / CHECKPOINT_KEY_FILE)
        return cls(policy=holder, audit=CentralAudit(store, clock=clock, signer=signer), clock=clock,
                   default_x509_ttl=cfg.default_x509_svid_ttl, default_jwt_ttl=cfg.default_jwt_svid_ttl)

    @property
    def policy(self) -> Policy:
        """The policy in force (reloaded from its file when it changed)."""
        return EMPTY_POLICY if self._holder is None else self._holder.policy

    @property
    def policy_generation(self) -> int:
        """Counts the policies that took effect (0 without a policy file)."""
        return 0 if self._holder is None else self._holder.generation

    def check_policy(self) -> bool:
        """Reload the policy file now if it changed; True if a new policy took effect."""
        return self._holder is not None and self._holder.check()

    async def poll_policy(self) -> bool:
        """One reload check, for the server's background loop (so refusals are logged promptly).

        True when a new policy took effect since the last poll (here or on a mint's reload check):
        the caller wakes the sync streams, which re-send the entries whose TTL in force changed.
        """
        self.check_policy()
        generation = self.policy_generation
        changed, self._announced = generation != self._announced, generation
        return changed

    def x509_ttl_in_force(self, entry: RegistrationEntry) -> int:
        """Seconds an agent CSR for ``entry`` is signed for now: its TTL or the default, capped by the policy.

        Sent to agents with the entry so they re-mint SVIDs that outlive it. Worked out once per
        (entry revision, policy generation): an entry or policy change costs one evaluation per
        entry, an unchanged sync none. A rule that depends on the time of day is sampled then.
        """
        requested = timedelta(seconds=entry.x509_svid_ttl) if entry.x509_svid_ttl else None
        policy = self.policy
        if not policy.rules:  # nothing can cap it: no document to build
            return int((requested or self.default_x509_ttl).total_seconds())
        generation = self.policy_generation
        known = self._ttls.get(entry.id)
        if known is not None and known[:2] == (entry.revision, generation):
            return known[2]
        req = MintRequest(rpc="SyncAuthorized", method=Method.AGENT_CSR, actor="server", spiffe_id=entry.spiffe_id,
                          entries=(entry,), requested_ttl=requested)
        decision = decide(policy, req, now=self._clock.now())
        # a denied entry gets no new SVID anyway: announce the uncapped TTL
        capped = capped_ttl(requested, self.default_x509_ttl, decision) if decision.allowed else None
        seconds = int((capped or requested or self.default_x509_ttl).total_seconds())
        if len(self._ttls) >= MAX_TTL_MEMO:
            self._ttls.clear()  # deleted entries linger here: start over rather than grow
        self._ttls[entry.id] = (entry.revision, generation, seconds)
        return seconds

    # -- minting -------------------------------------------------------------------------------

    async def mint_jwt(self, req: MintRequest, sign: Callable[[timedelta | None], str],
                       issuance: Callable[[str], Issuance]) -> str:
        """Decide, sign with the capped TTL, audit and log the issuance; raises AuthorizationError on deny."""
        return await self._mint(req, sign, self.default_jwt_ttl, issuance)

    async def mint_x509(self, req: MintRequest, sign: Callable[[timedelta | None], tuple[x509.Certificate, ...]],
                        issuance: Callable[[tuple[x509.Certificate, ...]], Issuance],
                        ) -> tuple[x509.Certificate, ...]:
        """Decide, sign with the capped TTL, audit and log the issuance; raises AuthorizationError on deny."""
        return await self._mint(req, sign, self.default_x509_ttl, issuance)

    async def _mint(self, req: MintRequest, sign: Callable[[timedelta | None], T], default: timedelta,
                    issuance: Callable[[T], Issuance]) -> T:
        now = self._clock.now()
        decision = decide(self.policy, req, now=now)
        _count(req, decision)
        if not decision.allowed:
            await self.record([_decision_event(req, decision, now=now)])
            raise denial(decision)
        ttl = capped_ttl(req.requested_ttl, default, decision)
        issued = sign(ttl)
        item = issuance(issued)
        serial = item.value if item.kind is RevocationKind.SERIAL else None
        jti = item.value if item.kind is RevocationKind.JTI else None
        # The audit record and the issuance log (what revocation looks up) in one transaction.
        await self.record([_decision_event(req, decision, now=now, serial=serial, jti=jti, ttl=ttl)], [item])
        return issued

    async def admin_request(self, store: DataStore, *, rpc: str, actor: str, spiffe_id: str,
                            audiences: tuple[str, ...] = (), ttl_seconds: int = 0) -> MintRequest:
        """An admin ``x509 mint`` / ``jwt mint``, evaluated against the entries with that SPIFFE ID."""
        method = Method.MINT_JWT_SVID if audiences else Method.MINT_X509_SVID
        return MintRequest(rpc=rpc, method=method, actor=actor, spiffe_id=spiffe_id,
                           entries=await entries_for(store, spiffe_id), audiences=audiences,
                           requested_ttl=timedelta(seconds=ttl_seconds) if ttl_seconds else None)

    @staticmethod
    def agent_jwt_request(*, actor: str, entry: RegistrationEntry, audiences: tuple[str, ...]) -> MintRequest:
        """An agent's NewJWTSVID for one of its entries."""
        return MintRequest(rpc="NewJWTSVID", method=Method.MINT_JWT_SVID, actor=actor, spiffe_id=entry.spiffe_id,
                           entries=(entry,), audiences=audiences,
                           requested_ttl=timedelta(seconds=entry.jwt_svid_ttl) if entry.jwt_svid_ttl else None)

    def batch(self, *, actor: str, rpc: str = "BatchNewX509SVID") -> CsrBatch:
        """A decision cache and record buffer for one BatchNewX509SVID call."""
        return CsrBatch(self, actor=actor, rpc=rpc, now=self._clock.now(), policy=self.policy)

    # -- audit ---------------------------------------------------------------------------------

    async def record(self, events: Sequence[AuditEvent], issuances: Sequence[Issuance] = ()) -> None:
        """Append events (and log ``issuances``, same transaction) off the event loop; AuditWriteError on failure."""
        if events or issuances:
            await asyncio.to_thread(self.audit.append, events, issuances)

    async def note(self, *, actor: str, method: str, spiffe_id: str | None, reason: str, decision: str = "allow",
                   selectors: Iterable[object] = (), details: Mapping[str, Any] | None = None) -> None:
        """Audit an attestation or admin change."""
        await self.record([build_event(now=self._clock.now(), actor=actor, spiffe_id=spiffe_id, selectors=selectors,
                                       decision=decision, reason=reason, method=method, details=details)])

    async def attested(self, attestor: str, agent_id: str | None, *, selectors: Iterable[object] = (),
                       serial: str | None = None, error: str | None = None) -> None:
        """Audit a node attestation, successful (agent ID, selectors, SVID serial) or not (the error only)."""
        await self.record([build_event(
            now=self._clock.now(), actor="server", spiffe_id=agent_id, selectors=selectors,
            decision="deny" if error is not None else "allow", reason=error or "agent attested",
            method="AttestAgent", serial=serial, details={"attestor": attestor})])

    # -- quarantine ----------------------------------------------------------------------------

    async def quarantine(self, store: DataStore, entry_id: str, *, reason: str, actor: str) -> RegistrationEntry:
        """Mark the entry quarantined (nothing is minted for it until cleared) and audit it.

        Revoking its SVIDs is the caller's part (``spiffe_server.api.revocations.revoke_entry``).
        """
        entry = await asyncio.to_thread(store.get_entry, entry_id)
        labels = {**entry.labels, QUARANTINE_REASON_LABEL: reason}
        updated = await asyncio.to_thread(store.update_entry, replace(entry, quarantined=True, labels=labels))
        QUARANTINES.inc()
        log.warning("entry quarantined", extra={"entry_id": entry_id, "spiffe_id": entry.spiffe_id, "reason": reason})
        await self.note(actor=actor, method="QuarantineEntry", spiffe_id=entry.spiffe_id, decision="deny",
                        reason=f"entry quarantined: {reason}", selectors=entry.selectors,
                        details={"entry_id": entry_id})
        return updated


def patch_entry(entry: RegistrationEntry, *, set_labels: Mapping[str, str], remove_labels: Iterable[str],
                clear_quarantine: bool) -> RegistrationEntry:
    """The entry with labels set/removed and, if asked, the quarantine (and its reason label) cleared."""
    labels = {k: v for k, v in entry.labels.items() if k not in set(remove_labels)}
    labels.update(set_labels)
    quarantined = entry.quarantined and not clear_quarantine
    if not quarantined:
        labels.pop(QUARANTINE_REASON_LABEL, None)
    return replace(entry, labels=labels, quarantined=quarantined)


def keep_quarantine(new: RegistrationEntry, stored: RegistrationEntry) -> RegistrationEntry:
    """A replacing update keeps the stored quarantine (and its reason): only PatchEntry clears it."""
    if not stored.quarantined:
        return replace(new, quarantined=False)
    reason = stored.labels.get(QUARANTINE_REASON_LABEL, "")
    return replace(new, quarantined=True, labels={**new.labels, QUARANTINE_REASON_LABEL: reason})


async def entries_for(store: DataStore, spiffe_id: str) -> tuple[RegistrationEntry, ...]:
    """Entries whose SPIFFE ID is ``spiffe_id`` (what an admin mint is evaluated against)."""
    page = await asyncio.to_thread(store.list_entries, EntryFilter(by_spiffe_id=spiffe_id), Page(size=MAX_PAGE_SIZE))
    return page.items


@dataclass
class CsrBatch:
    """One BatchNewX509SVID: each entry is decided once; its records are appended together at the end.

    One record per (entry, decision) per batch keeps the chain cheap for large batches: an allow
    lists the serials signed for the entry (``serial`` too when there is exactly one).
    """

    guard: Guard
    actor: str
    rpc: str
    now: datetime
    policy: Policy
    _decisions: dict[str, tuple[MintRequest, Decision, timedelta | None, tuple[Counter, ...]]] = field(
        default_factory=dict)
    _denied: dict[str, int] = field(default_factory=dict)

    def allows(self, entry: RegistrationEntry, requested_ttl: timedelta | None) -> tuple[bool, timedelta | None]:
        """What :meth:`check` will decide for ``entry`` (allowed, TTL), without counting or recording anything."""
        _, decision, ttl, _ = self._decided(entry, requested_ttl)
        return decision.allowed, ttl

    def check(self, entry: RegistrationEntry, requested_ttl: timedelta | None) -> timedelta | None:
        """The TTL to sign with for ``entry`` (capped by policy); AuthorizationError on deny or quarantine."""
        _, decision, ttl, counters = self._decided(entry, requested_ttl)
        for counter in counters:  # every item counts, as an unbatched request would
            counter.inc()
        if not decision.allowed:
            self._denied[entry.id] = self._denied.get(entry.id, 0) + 1
            raise denial(decision)
        return ttl

    def _decided(self, entry: RegistrationEntry, requested_ttl: timedelta | None
                 ) -> tuple[MintRequest, Decision, timedelta | None, tuple[Counter, ...]]:
        known = self._decisions.get(entry.id)
        if known is None:
            req = MintRequest(rpc=self.rpc, method=Method.AGENT_CSR, actor=self.actor, spiffe_id=entry.spiffe_id,
                              entries=(entry,), requested_ttl=requested_ttl)
            decision = decide(self.policy, req, now=self.now)
            known = self._decisions[entry.id] = (req, decision,
                                                 capped_ttl(requested_ttl, self.guard.default_x509_ttl, decision),
                                                 _counters(req, decision))
        return known

    def events(self, issued: Iterable[Issuance]) -> list[AuditEvent]:
        """The batch's records: each denied entry once, each allowed entry with the serials signed for it."""
        serials: dict[str, list[str]] = {}
        for item in issued:
            serials.setdefault(item.entry_id, []).append(item.value)
        events = []
        for entry_id, (req, decision, ttl, _) in self._decisions.items():
            if not decision.allowed and self._denied.get(entry_id):  # allows() alone records nothing
                events.append(_decision_event(req, decision, now=self.now, items=self._denied[entry_id]))
            for chunk in _chunks(serials.get(entry_id, []), MAX_SERIALS_PER_RECORD):
                events.append(_decision_event(req, decision, now=self.now, ttl=ttl, items=len(chunk),
                                              serial=chunk[0] if len(chunk) == 1 else None, serials=chunk))
        return events

    async def commit(self, issued: Sequence[Issuance]) -> None:
        """Append the batch's records and log ``issued`` in one transaction; AuditWriteError fails the batch."""
        await self.guard.record(self.events(issued), issued)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def load_holder(path: Path, clock: Clock) -> PolicyHolder:
    """A hot-reloading holder for ``path`` that logs and counts reloads and refusals."""

    def reloaded(policy: Policy) -> None:
        POLICY_RELOADS.labels(result="ok").inc()
        POLICY_FILE_REFUSED.set(0)
        log.info("policy reloaded", extra={"policy_file": str(path), "rules": len(policy.rules)})

    def refused(err: PolicyError) -> None:
        POLICY_RELOADS.labels(result="error").inc()
        POLICY_FILE_REFUSED.set(1)
        # names the file, line and rule with the first line of the parser error, never the whole file
        log.warning("policy refused, the previous policy stays in force: %s", err)

    holder = PolicyHolder(path, clock=clock, on_reload=reloaded, on_error=refused)
    log.info("policy loaded", extra={"policy_file": str(path), "rules": len(holder.policy.rules)})
    return holder


__all__ = [
    "QUARANTINE_REASON_LABEL",
    "CsrBatch",
    "Guard",
    "MintRequest",
    "capped_ttl",
    "decide",
    "entries_for",
    "keep_quarantine",
    "load_holder",
    "patch_entry",
    "policy_document",
]
