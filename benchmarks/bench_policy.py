"""Per-request cost of the CEL policy (10 realistic rules) and of the audit/guardrail cores.

Run: ``.venv/bin/python benchmarks/bench_policy.py``. Target (issue 6): p50 <= 50 µs for a
10-rule policy per request. The floor is one raw ECDSA P-256 signature, the cost of the mint
the policy guards; a trivial compiled CEL evaluation is shown as a row for scale.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers (not an installed package)

import cel
from _stats import print_table, time_calls
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_agent.anomaly import AnomalyConfig, AnomalyDetector, Observation
from spiffe_agent.ratelimit import Limit, RateLimitConfig, RateLimiter
from spiffe_py._policy import EntryFacts, Method, WorkloadFacts, build_input, parse_policy
from spiffe_py.audit import build_event, seal_record
from spiffe_py.selectors import Selector
from tests.support.policy_rules import PAYMENTS_RULE

CALLS = 20_000

POLICY = PAYMENTS_RULE + '''
[[rule]]
name = "no-root"
when = 'has(workload.uid) && workload.uid == 0 && !("unix:user:root-allowed" in workload.selectors)'
effect = "deny"
reason = "root workloads get no SVID"

[[rule]]
name = "prod-office-hours"
when = 'has(entry.labels.env) && entry.labels.env == "prod" && (time.hour < 6 || time.hour >= 22)'
effect = "deny"
reason = "prod identities are not issued at night"

[[rule]]
name = "expired-task"
when = 'has(task.expires_at) && task.expires_at < time.now'
effect = "deny"
reason = "task has ended"

[[rule]]
name = "old-task"
when = 'has(task.age) && task.age > duration("24h")'
effect = "deny"
reason = "task older than a day"

[[rule]]
name = "trusted-images"
when = 'has(workload.container) && !workload.container.image.startsWith("registry.example.org/")'
effect = "deny"
reason = "untrusted container registry"

[[rule]]
name = "validator-audience"
when = 'request.method == "ValidateJWTSVID" && !has(request.validator_audience)'
effect = "deny"
reason = "validation needs an audience"

[[rule]]
name = "batch-short"
when = 'has(entry.labels.tier) && entry.labels.tier == "batch"'
effect = "allow"
reason = "batch jobs get 10 minutes"
max_ttl = 600

[[rule]]
name = "external-audience-short"
when = 'request.audiences.exists(a, a.startsWith("https://"))'
effect = "allow"
reason = "external audiences get 5 minutes"
max_ttl = 300

[[rule]]
name = "weekend-short"
when = 'time.weekday == 0 || time.weekday == 6'
effect = "allow"
reason = "weekend issuance is short-lived"
max_ttl = 900
'''

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
WORKLOAD = WorkloadFacts(
    spiffe_id="spiffe://example.org/ns/pay/sa/api",
    selectors=tuple(Selector.parse(s) for s in ("unix:uid:1000", "unix:gid:1000", "docker:label:app:api")),
    pid=4242, uid=1000, gid=1000, path="/usr/local/bin/api", sha256="ab" * 32,
    container_image="registry.example.org/pay/api@sha256:" + "cd" * 32, container_labels={"app": "api"},
)
ENTRY = EntryFacts(id="3f1c", spiffe_id="spiffe://example.org/ns/pay/sa/api", x509_svid_ttl=3600, jwt_svid_ttl=300,
                   labels={"approved": "true", "tier": "batch", "env": "prod"})


def build() -> dict[str, object]:
    return build_input(
        now=NOW, method=Method.FETCH_JWT_SVID, workload=WORKLOAD, entry=ENTRY,
        audiences=("payments", "https://api.example.com"), task_started_at=NOW - timedelta(hours=1),
        task_expires_at=NOW + timedelta(hours=1),
    )


def main() -> None:
    policy = parse_policy(POLICY, "bench.toml")
    if len(policy.rules) != 10:
        raise SystemExit("bench policy must have 10 rules")
    doc = build()
    decision = policy.evaluate(doc)
    print(f"decision for the benchmark request: {decision}")

    key = ec.generate_private_key(ec.SECP256R1())
    floor = time_calls("raw ECDSA P-256 sign (floor)", lambda: key.sign(b"x" * 64, ec.ECDSA(hashes.SHA256())),
                       n=CALLS)
    trivial, trivial_ctx = cel.compile("true"), cel.Context({})
    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=1e9, burst=1_000_000_000)))
    detector = AnomalyDetector(AnomalyConfig())
    obs = Observation(WORKLOAD.spiffe_id or "", audiences=("payments",), entry_id="3f1c", node="n1", sha256="ab" * 32)

    def audit_record() -> object:
        event = build_event(now=NOW, actor="agent", spiffe_id=WORKLOAD.spiffe_id, selectors=WORKLOAD.selectors,
                            decision="allow", reason=decision.reason, method="FetchJWTSVID", jti="9b2e",
                            details={"audiences": ["payments"], "max_ttl": 300})
        return seal_record(event, seq=1, prev_hash="0" * 64)

    cases = [
        time_calls("trivial compiled CEL eval ('true')", lambda: trivial.execute(trivial_ctx), n=CALLS),
        time_calls("build_input (document only)", build, n=CALLS),
        time_calls("evaluate 10 rules (prebuilt doc)", lambda: policy.evaluate(doc), n=CALLS),
        time_calls("build_input + evaluate 10 rules", lambda: policy.evaluate(build()), n=CALLS),
        time_calls("audit build_event + seal_record", audit_record, n=CALLS),
        time_calls("rate limiter allow()", lambda: limiter.allow(obs.spiffe_id, now=NOW), n=CALLS),
        time_calls("anomaly observe()", lambda: detector.observe(obs, now=NOW), n=CALLS),
    ]
    print_table(cases, floor=floor)
    per_request = cases[3]
    verdict = "meets" if per_request.median <= 50e-6 else "MISSES"
    print(f"per-request policy p50 {per_request.median * 1e6:.1f} µs: {verdict} the 50 µs target")


if __name__ == "__main__":
    main()
