"""Prometheus metrics of the broker, per upstream and caller."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("spiffe_broker_requests_total", "Proxied requests by outcome",
                   ("upstream", "caller", "status"))
TOKENS = Counter("spiffe_broker_tokens_total", "Provider-reported tokens", ("upstream", "caller"))
DURATION = Histogram("spiffe_broker_request_duration_seconds", "Time from request to the end of the response",
                     ("upstream",), buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
REFUSALS = Counter("spiffe_broker_refusals_total", "Requests refused before forwarding", ("upstream", "reason"))
EXCHANGES = Counter("spiffe_broker_token_exchanges_total", "Token exchanges by result", ("result",))
REVOKED = Gauge("spiffe_broker_revoked_values", "Revoked serials and jtis known from the agent")
AUDIT_FORWARDED = Counter("spiffe_broker_audit_forwarded_total", "Audit records acknowledged by the server")
AUDIT_FORWARD_FAILURES = Counter("spiffe_broker_audit_forward_failures_total", "Failed ForwardAudit calls")
