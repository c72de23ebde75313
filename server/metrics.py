"""Prometheus metrics of spiffe-server, served on an optional HTTP listener.

::

    start_metrics_listener(cfg.metrics)               # prometheus_client HTTP server thread
    RPCS.labels(method="AttestAgent", code="OK").inc()
    with SIGN_LATENCY.labels(kind="jwt").time(): ...
    CaExpiryCollector(ctx.ca)                         # CA expiry gauges, read at each scrape

Every metric is listed in docs/operations.md (a unit test checks that).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric

from spiffe_server.config import MetricsConfig

# seconds: from an in-memory answer to a call that waits on the datastore or a batch of signatures
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# streams whose duration is not a latency: they stay open until the agent leaves or the resync interval
LONG_LIVED_RPCS = frozenset({"SyncAuthorized"})

REGISTRY = CollectorRegistry()
RPCS = Counter("spiffe_server_rpc", "Server API calls by method and gRPC status", ["method", "code"],
               registry=REGISTRY)
RPC_LATENCY = Histogram("spiffe_server_rpc_latency_seconds",
                        "Agent API and admin API latency by method and gRPC status (SyncAuthorized not included)",
                        ["method", "code"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
SIGNED = Counter("spiffe_server_ca_sign", "SVIDs signed by kind", ["kind"], registry=REGISTRY)
SIGN_LATENCY = Histogram("spiffe_server_ca_sign_latency_seconds",
                         "Time to sign by kind: agent (one agent SVID), x509 (one batch of workload CSRs), jwt",
                         ["kind"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
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


class _JwtKey(Protocol):
    @property
    def not_after(self) -> datetime: ...


class _X509Authority(Protocol):
    @property
    def cert(self) -> _Cert: ...


class _Cert(Protocol):
    @property
    def not_valid_after_utc(self) -> datetime: ...


class CaView(Protocol):
    """The parts of the CA manager the expiry gauges read."""

    def active_x509_ca(self) -> _X509Authority: ...

    def active_jwt_key(self) -> _JwtKey: ...


class CaExpiryCollector:
    """``spiffe_server_ca_expiry_timestamp_seconds{kind}``: when the active X.509 CA and JWT key expire."""

    NAME = "spiffe_server_ca_expiry_timestamp_seconds"
    HELP = "When the active signing authority expires, by kind: x509 (the X.509 CA), jwt (the JWT key); Unix seconds"

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._ca: CaView | None = None
        if registry is not None:
            registry.register(self)

    def watch(self, ca: CaView) -> None:
        """Read ``ca`` from now on (the running server's CA manager)."""
        self._ca = ca

    def collect(self) -> Iterator[Metric]:
        """One sample per kind that has an active authority (none while the CA is not ready)."""
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["kind"])
        ca = self._ca
        if ca is not None:
            # no active authority: the sample is absent, and /ready says why
            with contextlib.suppress(Exception):
                family.add_metric(["x509"], ca.active_x509_ca().cert.not_valid_after_utc.timestamp())
            with contextlib.suppress(Exception):
                family.add_metric(["jwt"], ca.active_jwt_key().not_after.timestamp())
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples."""
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["kind"])


CA_EXPIRY = CaExpiryCollector()
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
