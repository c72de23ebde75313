"""spiffe_agent.guard and .audit: policy decisions, rate limits, anomalies, quarantine, audit file and forwarding."""

from __future__ import annotations

import asyncio
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from grpclib.const import Status

from spiffe_agent.anomaly import AnomalyConfig
from spiffe_agent.audit import AgentAudit
from spiffe_agent.errors import AgentConfigError
from spiffe_agent.guard.config import GuardSettings, anomaly_config, rate_limit_config
from spiffe_agent.guard.decision import PolicyDeniedError, RateLimitedError, WorkloadGuard, refusal, workload_facts
from spiffe_agent.manager.cache import Entry, Identity, WorkloadView
from spiffe_agent.ratelimit import Limit
from spiffe_agent.workloadapi.status import status_for
from spiffe_py._peercred import PeerCred
from spiffe_py._policy import Method
from spiffe_py.audit import load_jsonl, verify_chain
from spiffe_py.clock import ManualClock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId
from tests.support.policy_rules import PAYMENTS_RULE

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = PAYMENTS_RULE + """
[[rule]]
name = "needs-tier"
when = 'request.method == "FetchX509SVID" && entry.labels.tier == "x"'
effect = "deny"
reason = "tier x gets no x509"
"""
SELECTORS = frozenset(Selector.parse(s) for s in ("unix:uid:1000", "unix:sha256:" + "ab" * 32))
CRED = PeerCred(pid=42, uid=1000, gid=1000)


def entry(eid: str = "e1", labels: dict[str, str] | None = None, **kw: object) -> Entry:
    return Entry(id=eid, spiffe_id=SpiffeId.parse(f"spiffe://example.org/{eid}"), selectors=frozenset(),
                 labels=labels or {}, **kw)  # type: ignore[arg-type]


def make_guard(tmp_path: Path, **settings: object) -> tuple[WorkloadGuard, AgentAudit, ManualClock]:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    clock = ManualClock(NOW)
    audit = AgentAudit.open(tmp_path / "data")
    opts: dict[str, object] = {"policy_file": policy, "anomaly": None, **settings}
    return WorkloadGuard(GuardSettings(**opts), audit=audit, clock=clock), audit, clock  # type: ignore[arg-type]


def records(audit: AgentAudit) -> list[dict[str, object]]:
    return load_jsonl(audit.path) if audit.path.exists() else []


def test_workload_facts_from_peer_and_selectors() -> None:
    sels = SELECTORS | {Selector.parse("unix:path:/bin/x"), Selector.parse("docker:label:app:web"),
                        Selector.parse("docker:image_id:img@sha256:1")}
    facts = workload_facts(CRED, sels)
    assert (facts.pid, facts.uid, facts.gid, facts.path) == (42, 1000, 1000, "/bin/x")
    assert facts.sha256 == "ab" * 32
    assert facts.container_labels == {"app": "web"} and facts.container_image == "img@sha256:1"


def test_rate_limit_config_parses_label_tables_and_refuses_bad_ones() -> None:
    cfg = rate_limit_config({"default": {"rate": 5, "burst": 10}, "label": "tier",
                             "by_label": {"batch": {"rate": 0.5, "burst": 2}}})
    assert cfg is not None and cfg.limit_for({"tier": "batch"}) == Limit(rate=0.5, burst=2)
    assert cfg.limit_for({}) == Limit(rate=5.0, burst=10)
    assert rate_limit_config(None) is None
    for bad, msg in (({}, "needs 'default'"), ({"default": {"rate": 1}}, "rate = R, burst = B"),
                     ({"default": {"rate": 1, "burst": 1}, "by_label": {"a": {"rate": 1, "burst": 1}}},
                      "by_label needs label"),
                     ({"default": {"rate": 1, "burst": 1.5}}, "burst an integer")):
        with pytest.raises(AgentConfigError, match=msg):
            rate_limit_config(bad)


def test_anomaly_config_defaults_seconds_and_off() -> None:
    assert anomaly_config(None) == AnomalyConfig()
    assert anomaly_config({"learning_period": 3}) == AnomalyConfig(learning_period=timedelta(seconds=3))
    assert anomaly_config({"enabled": False}) is None
    with pytest.raises(AgentConfigError, match="unknown keys"):
        anomaly_config({"k": 1})


def test_policy_deny_is_audited_with_the_rule_reason(tmp_path: Path) -> None:
    guard, audit, _ = make_guard(tmp_path)
    verdict = guard.decide(Method.FETCH_JWT_SVID, entry(), workload_facts(CRED, SELECTORS), audiences=("payments",))
    assert not verdict.allowed and verdict.reason == "audience payments requires an approved entry"
    err = refusal(verdict)
    assert isinstance(err, PolicyDeniedError) and status_for(err) is Status.PERMISSION_DENIED
    assert "denied by rule 'payments-needs-approval'" in str(err)
    [rec] = records(audit)
    assert rec["decision"] == "deny" and rec["method"] == "FetchJWTSVID" and rec["actor"] == "agent"
    assert rec["details"]["entry_id"] == "e1" and rec["details"]["audiences"] == ["payments"]  # type: ignore[index]


def test_labels_from_sync_decide_the_next_request(tmp_path: Path) -> None:
    guard, audit, _ = make_guard(tmp_path)
    facts = workload_facts(CRED, SELECTORS)
    approved = entry(labels={"approved": "true"})
    verdict = guard.decide(Method.FETCH_JWT_SVID, approved, facts, audiences=("payments",))
    assert verdict.allowed
    assert records(audit) == []  # allows are recorded once served, with the jti
    guard.issued(Method.FETCH_JWT_SVID, approved, facts, verdict, audiences=("payments",), jti="j-1")
    assert records(audit)[0]["jti"] == "j-1" and records(audit)[0]["decision"] == "allow"


def test_evaluation_error_denies(tmp_path: Path) -> None:
    """Bad input: a rule reading a missing label fails closed."""
    guard, _, _ = make_guard(tmp_path)
    verdict = guard.decide(Method.FETCH_X509_SVID, entry(), workload_facts(CRED, SELECTORS))
    assert not verdict.allowed and "failed to evaluate" in verdict.reason


def test_rate_limit_gives_resource_exhausted(tmp_path: Path) -> None:
    limits = rate_limit_config({"default": {"rate": 1, "burst": 2}})
    guard, audit, clock = make_guard(tmp_path, rate_limit=limits)
    facts = workload_facts(CRED, SELECTORS)
    results = [guard.decide(Method.FETCH_JWT_SVID, entry(), facts, audiences=("a",)) for _ in range(3)]
    assert [r.allowed for r in results] == [True, True, False]
    assert isinstance(refusal(results[2]), RateLimitedError)
    assert status_for(refusal(results[2])) is Status.RESOURCE_EXHAUSTED
    assert records(audit)[-1]["reason"] == "rate limit exceeded"
    clock.advance(timedelta(seconds=1))
    assert guard.decide(Method.FETCH_JWT_SVID, entry(), facts, audiences=("a",)).allowed


def test_first_seen_audience_quarantines_until_the_server_clears_it(tmp_path: Path) -> None:
    asked: list[tuple[str, str]] = []

    async def quarantine(entry_id: str, reason: str) -> int:
        asked.append((entry_id, reason))
        return 1

    async def scenario() -> None:
        policy = tmp_path / "p.toml"
        policy.write_text("")
        clock = ManualClock(NOW)
        audit = AgentAudit.open(tmp_path / "data")
        guard = WorkloadGuard(GuardSettings(policy_file=policy, anomaly=AnomalyConfig(learning_period=timedelta(0)),
                                            quarantine_on_anomaly=True),
                              audit=audit, clock=clock, quarantine=quarantine)
        facts = workload_facts(CRED, SELECTORS)
        e = entry(revision=1)
        guard.decide(Method.FETCH_JWT_SVID, e, facts, audiences=("a",))  # first observation: no baseline yet
        clock.advance(timedelta(seconds=1))
        verdict = guard.decide(Method.FETCH_JWT_SVID, e, facts, audiences=("new",))
        assert not verdict.allowed and "quarantined" in verdict.reason
        await asyncio.sleep(0)
        assert asked == [("e1", "anomaly new_audience")]
        assert guard.quarantined(e) == "anomaly new_audience"  # locally, before the server's sync arrives
        assert any(r["reason"] == "anomaly alert: new_audience" for r in records(audit))
        synced = entry(revision=2, quarantined=True, labels={"quarantine.reason": "agent anomaly: x"})
        assert guard.quarantined(synced) == "agent anomaly: x"
        assert guard.quarantined(entry(revision=3)) is None  # cleared on the server

    asyncio.run(scenario())


def test_x509_gate_leaves_out_denied_identities_and_audits_changes_once(tmp_path: Path) -> None:
    guard, audit, _ = make_guard(tmp_path)
    ok, denied = entry("a", {"tier": "y"}), entry("b", {"tier": "x"})
    view = WorkloadView((Identity(ok, None), Identity(denied, None)), None)
    gate = guard.x509_gate(CRED, SELECTORS)
    assert [i.entry.id for i in gate.apply(view).identities] == ["a"]
    gate.apply(view)
    assert [(r["decision"], r["details"]["entry_id"]) for r in records(audit)] == [  # type: ignore[index]
        ("allow", "a"), ("deny", "b")]
    with pytest.raises(PolicyDeniedError, match="tier x gets no x509"):
        gate.apply(WorkloadView((Identity(denied, None),), None))


def test_audit_file_is_private_chained_and_forwarded_from_its_position(tmp_path: Path) -> None:
    guard, audit, _ = make_guard(tmp_path)
    for _ in range(3):
        guard.decide(Method.FETCH_JWT_SVID, entry(), workload_facts(CRED, SELECTORS), audiences=("payments",))
    assert stat.S_IMODE(audit.path.stat().st_mode) == 0o600
    assert verify_chain(records(audit)).ok
    sent: list[list[str]] = []

    class Server:
        fail = True

        async def forward_audit(self, lines: list[str]) -> int:
            if self.fail:
                raise OSError("unreachable")
            sent.append(lines)
            return len(lines)

    server = Server()
    with pytest.raises(OSError):
        asyncio.run(audit.forward_once(server))
    assert audit.position() == 0  # nothing acknowledged, nothing lost
    server.fail = False
    assert asyncio.run(audit.forward_once(server)) == 3
    assert [json.loads(x)["seq"] for x in sent[0]] == [0, 1, 2]
    assert asyncio.run(audit.forward_once(server)) == 0
    reopened = AgentAudit.open(tmp_path / "data")  # a restart resumes the chain and the position
    assert reopened.position() == audit.path.stat().st_size
