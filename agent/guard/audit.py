"""The guard's audit trail: one chained record per decision and per anomaly alert, with their metrics.

::

    trail = DecisionTrail(AgentAudit.open(data_dir), clock=clock)
    trail.record(Method.FETCH_JWT_SVID, entry, facts, decision, audiences=("payments",), jti=token.jti)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from spiffe_agent.anomaly import Alert
from spiffe_agent.audit import AgentAudit
from spiffe_agent.manager.cache import Entry
from spiffe_agent.metrics import HotCounter
from spiffe_py._memo import Identity, Memo
from spiffe_py._policy import Decision, Method, WorkloadFacts
from spiffe_py.audit import AuditEvent, build_event
from spiffe_py.clock import Clock

log = logging.getLogger("spiffe_agent.guard")

ACTOR = "agent"
EVENT_MEMO = 1024  # distinct audit events (all but the time) whose validated form is remembered

DECISIONS = HotCounter("spiffe_agent_policy_decisions", "Workload API decisions", ("method", "decision"))
DENIALS = Counter("spiffe_agent_policy_denials_total", "Workload API denials", ["method", "rule"])
ALERTS = Counter("spiffe_agent_anomaly_alerts_total", "Anomaly alerts", ["kind"])


def decision_event(*, now: datetime, method: Method, entry: Entry | None, workload: WorkloadFacts,
                   decision: Decision, audiences: tuple[str, ...], serial: str | None, jti: str | None,
                   subject: str | None) -> AuditEvent:
    """The audit event of one decision (validated by build_event: no secrets, JSON-safe)."""
    details: dict[str, Any] = {"rule": decision.rule, "pid": workload.pid, "uid": workload.uid}
    if entry is not None:
        details["entry_id"] = entry.id
    if audiences:
        details["audiences"] = list(audiences)
    if decision.max_ttl is not None:
        details["max_ttl"] = int(decision.max_ttl.total_seconds())
    if subject is not None:
        details["subject"] = subject
    return build_event(
        now=now, actor=ACTOR, spiffe_id=str(entry.spiffe_id) if entry else workload.spiffe_id,
        selectors=workload.selectors, decision="allow" if decision.allowed else "deny", reason=decision.reason,
        method=str(method), serial=serial, jti=jti, details=details)


class DecisionTrail:
    """Writes decisions and alerts to the agent's audit chain before the answer goes out."""

    def __init__(self, audit: AgentAudit, *, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock
        # (what a record says but its time) -> its validated event: see record
        self._events: Memo[Hashable, AuditEvent] = Memo(EVENT_MEMO)

    def record(self, method: Method, entry: Entry | None, workload: WorkloadFacts, decision: Decision, *,
               audiences: tuple[str, ...], serial: str | None = None, jti: str | None = None,
               subject: str | None = None) -> None:
        """Count and audit one decision.

        A workload repeating a call produces the same event but for its time: the validated event
        (secret and JSON checks of build_event, its serialisation) is remembered under everything
        it is built from, entry and facts by identity (both immutable; the memo keeps them alive),
        and only re-stamped when written (``AgentAudit.append(event, at=now)``).
        """
        DECISIONS.inc(str(method), "allow" if decision.allowed else "deny")
        if not decision.allowed:
            DENIALS.labels(method=str(method), rule=decision.rule or "").inc()
        key = (Identity(entry, workload), method, decision.allowed, decision.reason, decision.rule, decision.max_ttl,
               audiences, serial, jti, subject)
        now = self._clock.now()
        event = self._events.get(key)
        if event is not None:
            self._audit.append(event, at=now)
            return
        event = decision_event(now=now, method=method, entry=entry, workload=workload, decision=decision,
                               audiences=audiences, serial=serial, jti=jti, subject=subject)
        self._events.put(key, event)
        self._audit.append(event, at=None)

    def alert(self, method: Method, entry: Entry, workload: WorkloadFacts, alert: Alert, *, denied: bool) -> None:
        """Count, log and audit one anomaly alert (``denied``: the entry is quarantined for it)."""
        ALERTS.labels(kind=str(alert.kind)).inc()
        log.warning("anomaly %s for %s: %s", alert.kind, alert.spiffe_id, dict(alert.details))
        self._audit.append(build_event(
            now=self._clock.now(), actor=ACTOR, spiffe_id=alert.spiffe_id, selectors=workload.selectors,
            decision="deny" if denied else "allow", reason=f"anomaly alert: {alert.kind}",
            method=str(method), details={"alert": str(alert.kind), "entry_id": entry.id, **alert.details}))
