"""Prometheus metrics of spiffe-server, served on an optional HTTP listener.

::

    start_metrics_listener(cfg.metrics)               # prometheus_client HTTP server thread
    RPCS.labels(method="AttestAgent", code="OK").inc()
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from spiffe_server.config import MetricsConfig

REGISTRY = CollectorRegistry()
RPCS = Counter("spiffe_server_rpc", "Server API calls by method and gRPC status", ["method", "code"],
               registry=REGISTRY)
SIGNED = Counter("spiffe_server_ca_sign", "SVIDs signed by kind", ["kind"], registry=REGISTRY)
AGENTS_SYNCING = Gauge("spiffe_server_sync_streams", "Open SyncAuthorized streams", registry=REGISTRY)
BUNDLE_SEQUENCE = Gauge("spiffe_server_bundle_sequence", "Sequence number of the trust bundle", registry=REGISTRY)


def start_metrics_listener(cfg: MetricsConfig) -> None:
    """Serve ``/metrics`` on ``bind_address:bind_port`` from a daemon thread."""
    start_http_server(cfg.bind_port, addr=cfg.bind_address, registry=REGISTRY)


# -- request-time policy, audit and guardrails --
POLICY_DECISIONS = Counter("spiffe_server_policy_decisions", "Policy decisions on mints by method and decision",
                           ["method", "decision"], registry=REGISTRY)
POLICY_DENIALS = Counter("spiffe_server_policy_denials", "Denied mints by method and rule (or quarantine)",
                         ["method", "rule"], registry=REGISTRY)
POLICY_RELOADS = Counter("spiffe_server_policy_reloads", "Policy file reloads by result", ["result"],
                         registry=REGISTRY)
POLICY_FILE_REFUSED = Gauge("spiffe_server_policy_file_refused",
                            "1 while the policy file on disk is refused and the previous policy stays in force",
                            registry=REGISTRY)
AUDIT_RECORDS = Counter("spiffe_server_audit_records", "Records appended to the central audit chain",
                        ["decision"], registry=REGISTRY)
AUDIT_WRITE_FAILURES = Counter("spiffe_server_audit_write_failures", "Failed writes to the audit chain",
                               registry=REGISTRY)
AUDIT_ALERTS = Counter("spiffe_server_audit_alerts", "Audit alerts raised by kind", ["kind"], registry=REGISTRY)
QUARANTINES = Counter("spiffe_server_quarantines", "Entries quarantined", registry=REGISTRY)

# -- federation: the bundle endpoint client --
FEDERATION_REFRESHES = Counter("spiffe_server_federation_refreshes",
                               "Bundle endpoint fetches by foreign trust domain and result (ok or the refusal reason)",
                               ["trust_domain", "result"], registry=REGISTRY)
FEDERATION_LAST_REFRESH = Gauge("spiffe_server_federation_last_refresh_timestamp_seconds",
                                "Unix time of the last good fetch of a federated bundle", ["trust_domain"],
                                registry=REGISTRY)
FEDERATION_BUNDLE_AGE = Gauge("spiffe_server_federation_bundle_age_seconds",
                              "Seconds since the last good fetch of a federated bundle (-1: none yet)",
                              ["trust_domain"], registry=REGISTRY)
