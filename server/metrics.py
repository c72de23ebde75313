"""Prometheus metrics of spiffe-server, served on an optional HTTP listener.

::

    start_metrics_listener(cfg.metrics)               # prometheus_client HTTP server thread
    RPCS.labels(method="AttestAgent", code="OK").inc()
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from server.config import MetricsConfig

REGISTRY = CollectorRegistry()
RPCS = Counter("spiffe_server_rpc", "Server API calls by method and gRPC status", ["method", "code"],
               registry=REGISTRY)
SIGNED = Counter("spiffe_server_ca_sign", "SVIDs signed by kind", ["kind"], registry=REGISTRY)
AGENTS_SYNCING = Gauge("spiffe_server_sync_streams", "Open SyncAuthorized streams", registry=REGISTRY)
BUNDLE_SEQUENCE = Gauge("spiffe_server_bundle_sequence", "Sequence number of the trust bundle", registry=REGISTRY)


def start_metrics_listener(cfg: MetricsConfig) -> None:
    """Serve ``/metrics`` on ``bind_address:bind_port`` from a daemon thread."""
    start_http_server(cfg.bind_port, addr=cfg.bind_address, registry=REGISTRY)
