"""Request-time decisions of the Workload API: policy, rate limits, anomaly rules, quarantine.

The handler asks the guard once per identity it would serve; every decision (allow and
deny) is written to the agent's audit chain (agent.guard.audit) before the answer goes out::

    guard = WorkloadGuard(settings, audit=AgentAudit.open(data_dir), clock=clock, quarantine=manager_quarantine)
    verdict = guard.decide(Method.FETCH_JWT_SVID, entry, facts, audiences=("payments",))
    if not verdict.allowed: ...              # PERMISSION_DENIED / RESOURCE_EXHAUSTED with verdict.reason
    guard.issued(Method.FETCH_JWT_SVID, entry, facts, verdict, jti=token.jti)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from spiffe_agent.anomaly import Alert, AnomalyDetector, Observation
from spiffe_agent.audit import AgentAudit
from spiffe_agent.guard.audit import DecisionTrail
from spiffe_agent.guard.config import GuardSettings
from spiffe_agent.guard.quarantine import QuarantineBook, QuarantineCall
from spiffe_agent.manager.cache import Entry, Identity, JwtToken, WorkloadView
from spiffe_agent.ratelimit import RateLimitConfig, RateLimiter
from spiffe_py._memo import Memo
from spiffe_py._peercred import PeerCred
from spiffe_py._policy import (
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
from spiffe_py.clock import Clock
from spiffe_py.errors import SpiffeError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId

log = logging.getLogger("spiffe_agent.guard")

NODE = "local"  # each agent keeps its own detector, so the node is always this one

RELOADS = Counter("spiffe_agent_policy_reloads_total", "Policy reloads", ["result"])
FILE_REFUSED = Gauge("spiffe_agent_policy_file_refused",
                     "1 while the policy file on disk is refused and the previous policy stays in force")

FACTS_MEMO = 1024  # (peer, selectors) pairs whose workload facts are remembered
RATE_RULE = "rate_limit"


# --- request facts (pure) ------------------------------------------------------------------------


def workload_facts(cred: PeerCred | None, selectors: Iterable[Selector]) -> WorkloadFacts:
    """The ``workload`` document from the peer credentials and the attested selectors."""
    sels = sorted(selectors, key=str)
    unix = {s.value.partition(":")[0]: s.value.partition(":")[2] for s in sels if s.type == "unix"}
    labels: dict[str, str] = {}
    image = None
    for s in sels:
        if s.type != "docker":
            continue
        kind, _, rest = s.value.partition(":")
        if kind == "label":
            key, _, value = rest.partition(":")
            labels[key] = value
        elif kind == "image_id":
            image = rest
    return WorkloadFacts(
        selectors=tuple(sels), pid=cred.pid if cred else None, uid=cred.uid if cred else None,
        gid=cred.gid if cred else None, path=unix.get("path"), sha256=unix.get("sha256"),
        container_image=image, container_labels=labels or None,
    )


def entry_facts(entry: Entry | None) -> EntryFacts:
    """The ``entry`` document of a synced entry (only labels, empty, without one)."""
    if entry is None:
        return EntryFacts()
    return EntryFacts(id=entry.id, spiffe_id=str(entry.spiffe_id), x509_svid_ttl=entry.x509_svid_ttl or None,
                      jwt_svid_ttl=entry.jwt_svid_ttl or None, labels=dict(entry.labels))


def _started(entry: Entry | None) -> datetime | None:
    return datetime.fromtimestamp(entry.created_at, UTC) if entry is not None and entry.created_at else None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer for one identity: a policy decision or a guardrail refusal."""

    decision: Decision
    exhausted: bool = False  # over the rate limit: RESOURCE_EXHAUSTED, not PERMISSION_DENIED

    @property
    def allowed(self) -> bool:
        """True when the identity may be served."""
        return self.decision.allowed

    @property
    def reason(self) -> str:
        """Why (the rule's reason on deny)."""
        return self.decision.reason


NO_POLICY = Verdict(Decision(True, "no policy"))  # every verdict without a policy file (guardrails aside)


class PolicyDeniedError(SpiffeError):
    """The policy (or a quarantine) refused every identity of the request."""


class RateLimitedError(SpiffeError):
    """The identity is over its rate limit."""


def refusal(verdict: Verdict) -> SpiffeError:
    """The error for a refused request (the rule's reason, never a secret)."""
    if verdict.exhausted:
        return RateLimitedError(f"rate limit exceeded for this identity: {verdict.reason}")
    return PolicyDeniedError(f"policy: denied by rule '{verdict.decision.rule}': {verdict.reason}")


class WorkloadGuard:
    """Policy + rate limits + anomaly detection + quarantine for one agent; audits every decision."""

    def __init__(self, settings: GuardSettings, *, audit: AgentAudit, clock: Clock,
                 quarantine: QuarantineCall | None = None,
                 entries: Callable[[], Iterable[Entry]] = tuple) -> None:
        self._clock = clock
        self._entries = entries
        self._holder = self._load(settings.policy_file)
        self._limiter = RateLimiter(settings.rate_limit) if settings.rate_limit else None
        self._uid_limiter = RateLimiter(RateLimitConfig(settings.uid_rate_limit)) if settings.uid_rate_limit else None
        self._detector = AnomalyDetector(settings.anomaly) if settings.anomaly else None
        self._quarantining = quarantine is not None and settings.quarantine_on_anomaly
        self._quarantines = QuarantineBook(quarantine if self._quarantining else None)
        self._trail = DecisionTrail(audit, clock=clock)
        self._facts: Memo[tuple[PeerCred | None, frozenset[Selector]], WorkloadFacts] = Memo(FACTS_MEMO)

    def facts(self, cred: PeerCred | None, selectors: frozenset[Selector]) -> WorkloadFacts:
        """:func:`workload_facts`, remembered per (peer, selectors): both are immutable, so is the result."""
        return self._facts.get_or_build((cred, selectors), lambda: workload_facts(cred, selectors))

    def _load(self, path: Path | None) -> PolicyHolder | None:
        if path is None:
            return None
        return PolicyHolder(path, clock=self._clock, on_reload=_reloaded, on_error=_refused)

    @property
    def policy(self) -> Policy | None:
        """The policy in force (after a due reload check), or None without a policy file."""
        return self._holder.policy if self._holder else None

    async def watch_policy(self, interval: float = 1.0) -> None:
        """Check the policy file every ``interval`` seconds: a refused edit is logged without waiting for a request."""
        while self._holder is not None:
            await asyncio.sleep(interval)
            self._holder.check()

    # -- decisions ----------------------------------------------------------------------------

    def decide(self, method: Method, entry: Entry | None, workload: WorkloadFacts, *,
               audiences: tuple[str, ...] = (), validator_audience: str | None = None,
               requested_spiffe_id: str | None = None, charge: bool = True, record: bool = True) -> Verdict:
        """Quarantine, rate limit, anomaly rules, then policy; deny verdicts are audited here (if ``record``)."""
        verdict = self._guardrails(method, entry, audiences, workload, charge)
        if verdict is None:
            verdict = self._evaluate(method, entry, workload, audiences=audiences,
                                     validator_audience=validator_audience, requested_spiffe_id=requested_spiffe_id)
        if record and not verdict.allowed:
            self._record(method, entry, workload, verdict, audiences=audiences)
        return verdict

    def _guardrails(self, method: Method, entry: Entry | None, audiences: tuple[str, ...],
                    workload: WorkloadFacts, charge: bool) -> Verdict | None:
        why = self.quarantined(entry)
        if why is not None:
            return Verdict(Decision(False, f"entry quarantined: {why}", QUARANTINE_RULE))
        if entry is None or not charge:
            return None
        now = self._clock.now()
        if self._limiter is not None and not self._limiter.allow(str(entry.spiffe_id), now=now,
                                                                  labels=entry.labels).allowed:
            return Verdict(Decision(False, "rate limit exceeded", RATE_RULE), exhausted=True)
        if self._detector is not None:
            alerts = self._detector.observe(Observation(spiffe_id=str(entry.spiffe_id), audiences=audiences,
                                                        entry_id=entry.id, node=NODE, sha256=workload.sha256),
                                            now=now)
            if alerts and self._alert(method, entry, workload, alerts):
                return Verdict(Decision(False, f"entry quarantined: anomaly {alerts[0].kind}", QUARANTINE_RULE))
        return None

    def charge_uid(self, method: Method, workload: WorkloadFacts, *, audiences: tuple[str, ...] = ()) -> None:
        """Take one call from the caller uid's budget; RateLimitedError (audited) when it is spent."""
        if self._uid_limiter is None or workload.uid is None:
            return
        if self._uid_limiter.allow(f"uid:{workload.uid}", now=self._clock.now()).allowed:
            return
        verdict = Verdict(Decision(False, "rate limit exceeded for this uid", RATE_RULE), exhausted=True)
        self._record(method, None, workload, verdict, audiences=audiences)
        raise refusal(verdict)

    def _evaluate(self, method: Method, entry: Entry | None, workload: WorkloadFacts, *, audiences: tuple[str, ...],
                  validator_audience: str | None, requested_spiffe_id: str | None) -> Verdict:
        if self._holder is None:
            return NO_POLICY
        doc = build_input(now=self._clock.now(), method=method, workload=workload, entry=entry_facts(entry),
                          audiences=audiences, validator_audience=validator_audience,
                          requested_spiffe_id=requested_spiffe_id, task_started_at=_started(entry))
        return Verdict(self._holder.evaluate(doc))

    def issued(self, method: Method, entry: Entry | None, workload: WorkloadFacts, verdict: Verdict, *,
               audiences: tuple[str, ...] = (), serial: str | None = None, jti: str | None = None,
               subject: str | None = None) -> None:
        """Audit an allowed request once it was served (with the SVID's serial or jti)."""
        self._record(method, entry, workload, verdict, audiences=audiences, serial=serial, jti=jti, subject=subject)

    def _record(self, method: Method, entry: Entry | None, workload: WorkloadFacts, verdict: Verdict, *,
                audiences: tuple[str, ...], serial: str | None = None, jti: str | None = None,
                subject: str | None = None) -> None:
        self._trail.record(method, entry, workload, verdict.decision, audiences=audiences, serial=serial, jti=jti,
                           subject=subject)

    # -- anomalies and quarantine -------------------------------------------------------------

    def _alert(self, method: Method, entry: Entry, workload: WorkloadFacts, alerts: list[Alert]) -> bool:
        """Audit the alerts; quarantine the entry when configured. True if it was quarantined."""
        for alert in alerts:
            self._trail.alert(method, entry, workload, alert, denied=self._quarantining)
        if not self._quarantining:
            return False
        self.quarantine(entry, f"anomaly {alerts[0].kind}")
        return True

    def quarantine(self, entry: Entry, reason: str) -> None:
        """Stop serving ``entry`` now and ask the server to quarantine it (retried in the background)."""
        self._quarantines.quarantine(entry, reason)

    def quarantined(self, entry: Entry | None) -> str | None:
        """The quarantine reason if ``entry`` is quarantined (by the server, or here and not yet synced)."""
        return self._quarantines.quarantined(entry)

    def subject_quarantined(self, subject: str) -> str | None:
        """The quarantine reason if any synced entry for ``subject`` is quarantined."""
        for entry in self._entries():
            if str(entry.spiffe_id) == subject:
                why = self.quarantined(entry)
                if why is not None:
                    return why
        return None

    # -- Workload API flows -------------------------------------------------------------------

    def jwt_verdicts(self, entries: Sequence[Entry], facts: WorkloadFacts, audience: Sequence[str],
                     spiffe_id: SpiffeId | None) -> list[tuple[Entry, Verdict]]:
        """FetchJWTSVID: the verdict per candidate entry; PolicyDeniedError/RateLimitedError if none is allowed."""
        audiences = tuple(audience)
        self.charge_uid(Method.FETCH_JWT_SVID, facts, audiences=audiences)
        requested = str(spiffe_id) if spiffe_id else None
        verdicts = [(e, self.decide(Method.FETCH_JWT_SVID, e, facts, audiences=audiences,
                                    requested_spiffe_id=requested)) for e in entries]
        if not any(v.allowed for _, v in verdicts):
            raise refusal(verdicts[0][1])
        return verdicts

    def jwt_issued(self, minted: Sequence[tuple[Entry, JwtToken]], verdicts: Sequence[tuple[Entry, Verdict]],
                   facts: WorkloadFacts, audience: Sequence[str]) -> None:
        """FetchJWTSVID: audit each minted token under its entry's verdict."""
        verdict_of = {e.id: v for e, v in verdicts}
        for entry, token in minted:
            self.issued(Method.FETCH_JWT_SVID, entry, facts, verdict_of[entry.id], audiences=tuple(audience),
                        jti=token.jti)

    def validate_jwt(self, view: WorkloadView, selectors: frozenset[Selector], cred: PeerCred | None,
                     audience: str, validate: Callable[[], tuple[SpiffeId, Mapping[str, Any]]]
                     ) -> tuple[SpiffeId, Mapping[str, Any]]:
        """ValidateJWTSVID: validate, then refuse quarantined subjects and apply the policy; audited."""
        facts = self.facts(cred, selectors)
        caller = view.identities[0].entry if view.identities else None
        try:
            subject, claims = validate()
        except SpiffeError as err:
            self._record(Method.VALIDATE_JWT_SVID, caller, facts, Verdict(Decision(False, str(err), "invalid")),
                         audiences=(audience,))
            raise
        jti = str(claims.get("jti")) if claims.get("jti") else None
        why = self.subject_quarantined(str(subject))
        if why is not None:
            verdict = Verdict(Decision(False, f"subject quarantined: {why}", QUARANTINE_RULE))
            self._record(Method.VALIDATE_JWT_SVID, caller, facts, verdict, audiences=(audience,), jti=jti,
                         subject=str(subject))
            raise InvalidSubjectError(f"jwt-svid subject {str(subject)!r} is quarantined")
        verdict = self.decide(Method.VALIDATE_JWT_SVID, caller, facts, validator_audience=audience,
                              requested_spiffe_id=str(subject), charge=False, record=False)
        self._record(Method.VALIDATE_JWT_SVID, caller, facts, verdict, audiences=(audience,), jti=jti,
                     subject=str(subject))
        if not verdict.allowed:
            raise refusal(verdict)
        return subject, claims

    def x509_gate(self, cred: PeerCred | None, selectors: frozenset[Selector]) -> X509Gate:
        """A per-stream filter for FetchX509SVID views."""
        return X509Gate(self, self.facts(cred, selectors))


class InvalidSubjectError(SpiffeError):
    """ValidateJWTSVID: the token's subject is quarantined (treated like an invalid token)."""


class X509Gate:
    """Filters one FetchX509SVID stream's views by the guard; audits only when the outcome changes."""

    def __init__(self, guard: WorkloadGuard, facts: WorkloadFacts) -> None:
        self._guard = guard
        self._facts = facts
        self._charged: set[str] = set()  # rate limits charge once per identity per stream
        self._uid_charged = False  # and the caller's uid once per stream
        self._last: tuple[tuple[str, bool, str, int], ...] = ()

    def apply(self, view: WorkloadView) -> WorkloadView:
        """The view with refused identities left out; raises if every identity is refused."""
        if not self._uid_charged:
            self._uid_charged = True
            self._guard.charge_uid(Method.FETCH_X509_SVID, self._facts)
        verdicts = [(i, self._decide(i)) for i in view.identities]
        outcome = tuple((i.entry.id, v.allowed, v.reason, i.svid.serial if i.svid else 0) for i, v in verdicts)
        if outcome != self._last:
            self._last = outcome
            for ident, verdict in verdicts:
                serial = format(ident.svid.serial, "x") if ident.svid and ident.svid.serial else None
                self._guard.issued(Method.FETCH_X509_SVID, ident.entry, self._facts, verdict, serial=serial)
        kept = tuple(i for i, v in verdicts if v.allowed)
        if verdicts and not kept:
            raise refusal(verdicts[0][1])
        if len(kept) == len(verdicts):
            return view  # nothing refused: the view as it is (its federated bundles are already the wanted ones)
        wanted = {td for i in kept for td in i.entry.federates_with}
        federated = {td: b for td, b in view.federated.items() if td in wanted}
        return WorkloadView(kept, view.bundle, federated, view.crls)

    def _decide(self, ident: Identity) -> Verdict:
        charge = ident.entry.id not in self._charged
        self._charged.add(ident.entry.id)
        return self._guard.decide(Method.FETCH_X509_SVID, ident.entry, self._facts, charge=charge, record=False)


def _reloaded(policy: Policy) -> None:
    RELOADS.labels(result="ok").inc()
    FILE_REFUSED.set(0)
    log.info("policy reloaded from %s (%d rules)", policy.source, len(policy.rules))


def _refused(err: PolicyError) -> None:
    RELOADS.labels(result="error").inc()
    FILE_REFUSED.set(1)
    # names the file, line and rule with the first line of the parser error, never the whole file
    log.warning("policy refused, the previous policy stays in force: %s", err)
