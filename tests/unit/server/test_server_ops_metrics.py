"""Server metrics: RPC latency by method and status, and the CA expiry gauges read at scrape time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from prometheus_client import CollectorRegistry, generate_latest

from spiffe_server.api.errors import grpc_errors
from spiffe_server.errors import FailedPreconditionError
from spiffe_server.metrics import REGISTRY, CaExpiryCollector

NOT_AFTER = datetime(2026, 12, 8, tzinfo=UTC)


def _count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value("spiffe_server_rpc_latency_seconds_count", {"method": method, "code": code})
    return value or 0.0


def test_rpc_latency_is_observed_by_status_and_not_for_sync_streams() -> None:
    before = {code: _count("Demo", code) for code in ("OK", "NOT_FOUND", "FAILED_PRECONDITION")}
    with grpc_errors("Demo"):
        pass
    with pytest.raises(GRPCError), grpc_errors("Demo"):
        raise GRPCError(Status.NOT_FOUND, "x")
    with pytest.raises(GRPCError), grpc_errors("Demo"):
        raise FailedPreconditionError("y")
    assert {code: _count("Demo", code) - n for code, n in before.items()} == {
        "OK": 1, "NOT_FOUND": 1, "FAILED_PRECONDITION": 1}
    sync_before = _count("SyncAuthorized", "OK")
    with grpc_errors("SyncAuthorized"):
        pass
    assert _count("SyncAuthorized", "OK") == sync_before
    assert REGISTRY.get_sample_value("spiffe_server_rpc_total", {"method": "SyncAuthorized", "code": "OK"})


@dataclass
class _Cert:
    not_valid_after_utc: datetime


@dataclass
class _Authority:
    cert: _Cert


@dataclass
class _JwtKey:
    not_after: datetime


class _Ca:
    def __init__(self, ready: bool) -> None:
        self.ready = ready

    def active_x509_ca(self) -> _Authority:
        if not self.ready:
            raise FailedPreconditionError("ca: no active x509 authority")
        return _Authority(_Cert(NOT_AFTER))

    def active_jwt_key(self) -> _JwtKey:
        return _JwtKey(NOT_AFTER)


def test_ca_expiry_gauges_follow_the_active_authorities() -> None:
    registry = CollectorRegistry()
    gauges = CaExpiryCollector(registry=registry)
    assert registry.get_sample_value("spiffe_server_ca_expiry_timestamp_seconds", {"kind": "x509"}) is None
    gauges.watch(_Ca(ready=True))
    for kind in ("x509", "jwt"):
        assert registry.get_sample_value("spiffe_server_ca_expiry_timestamp_seconds",
                                         {"kind": kind}) == NOT_AFTER.timestamp()
    gauges.watch(_Ca(ready=False))  # no active X.509 CA: that sample is absent, the scrape still works
    assert registry.get_sample_value("spiffe_server_ca_expiry_timestamp_seconds", {"kind": "x509"}) is None
    assert b'kind="jwt"' in generate_latest(registry)


def test_the_server_accepts_warn_as_warning_and_logs_at_that_level(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from spiffe_server.config import parse_config
    from spiffe_server.logging import configure_logging

    cfg = parse_config('trust_domain = "example.org"\nlog_level = "warn"\nlog_format = "json"\n')
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(level=cfg.log_level, fmt=cfg.log_format)
        assert root.level == logging.WARNING
        logging.getLogger("spiffe_server").info("not shown")
        logging.getLogger("spiffe_server").warning("shown")
    finally:
        root.handlers[:], root.level = saved
    err = capsys.readouterr().err
    assert "not shown" not in err and '"level": "warning"' in err
