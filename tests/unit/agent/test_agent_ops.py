"""Operator-facing agent pieces without sockets: log formats and levels, [health] and its answers,
the expired-SVID refusal, latency histograms and expiry gauges."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from spiffe_agent.cli import _overrides, build_parser
from spiffe_agent.config import HealthListener, build_config, load_config
from spiffe_agent.errors import AgentConfigError, NotReadyError
from spiffe_agent.health import respond
from spiffe_agent.manager.cache import Entry, Identity, IssuedSvid, WorkloadView, expired_svid_error
from spiffe_agent.manager.manager import AgentHealth
from spiffe_agent.metrics import ExpiryCollector, ExpiryReading, HotHistogram
from spiffe_agent.workloadapi.status import status_for
from spiffe_py._serving.logs import configure_logging, normalize_level
from spiffe_py.spiffeid import SpiffeId

NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
SID = SpiffeId.parse("spiffe://example.org/w")


# -- logs -----------------------------------------------------------------------------------------

@pytest.fixture
def root_logger() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("hpack").level
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("hpack").setLevel(saved[2])


def test_json_lines_have_stable_keys_and_redact_tokens(root_logger: None) -> None:
    out = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=out)
    logging.getLogger("spiffe_agent.x").info("attested as %s", "spiffe://example.org/spire/agent/join_token/abc",
                                             extra={"serial": "3f", "level": "not a key override"})
    logging.getLogger("hpack.hpack").debug("Decoded header: secret-ish noise")  # quieted at any level
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    doc = json.loads(lines[0])
    assert list(doc)[:4] == ["time", "level", "logger", "msg"]
    assert doc["level"] == "info" and doc["logger"] == "spiffe_agent.x" and doc["serial"] == "3f"
    assert doc["msg"] == "attested as spiffe://example.org/spire/agent/join_token/[REDACTED]"
    assert doc["time"].endswith("Z") and datetime.fromisoformat(doc["time"]).tzinfo is not None


def test_text_lines_match_the_server_format(root_logger: None) -> None:
    out = io.StringIO()
    configure_logging(level="warn", fmt="text", stream=out)
    logging.getLogger("spiffe_agent").info("hidden at warn")
    logging.getLogger("spiffe_agent").warning("sync failed", extra={"server": "10.0.0.1:8081"})
    (line,) = out.getvalue().splitlines()
    assert line.endswith(" warning spiffe_agent: sync failed server='10.0.0.1:8081'")


@pytest.mark.parametrize(("given", "level"), [("warn", "WARNING"), ("warning", "WARNING"), ("DEBUG", "DEBUG")])
def test_warn_is_warning(given: str, level: str) -> None:
    assert normalize_level(given) == level


def test_unknown_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log level must be one of"):
        normalize_level("loud")
    with pytest.raises(ValueError, match="log format must be one of"):
        configure_logging(level="info", fmt="xml")


# -- config and flags -----------------------------------------------------------------------------

def test_log_format_warn_and_health_from_toml(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('trust_domain = "example.org"\nlog_level = "warn"\nlog_format = "json"\n'
                 '[health]\nbind_address = "0.0.0.0"\nbind_port = 9090\n')
    cfg = load_config(f, {})
    cfg.validate()
    assert (cfg.log_level, cfg.log_format) == ("warn", "json")
    assert cfg.health_listener() == HealthListener(bind_address="0.0.0.0", bind_port=9090)


def test_health_port_flag_sets_the_port_of_the_health_table(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('trust_domain = "example.org"\n[health]\nbind_address = "127.0.0.2"\nbind_port = 1\n')
    args = build_parser().parse_args(["run", "--config", str(f), "--health-port", "8088", "--log-format", "json"])
    cfg = load_config(f, _overrides(args))
    assert cfg.health_listener() == HealthListener(bind_address="127.0.0.2", bind_port=8088)
    assert cfg.log_format == "json"
    no_flag = load_config(None, _overrides(build_parser().parse_args(["run", "--trust-domain", "example.org"])))
    assert no_flag.health_listener() is None


@pytest.mark.parametrize(("health", "message"), [
    ({"bind_port": 0}, "bind_port out of range"),
    ({"bind_port": 70000}, "bind_port out of range"),
    ({"bind_port": True}, "bind_port out of range"),
    ({"bind_address": ""}, "bind_address must be"),
    ({"ready_path": "ready"}, "ready_path must be an absolute path"),
    ({"port": 1}, "unknown keys"),
])
def test_bad_health_tables_are_refused(health: dict[str, object], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        build_config({"trust_domain": "example.org", "health": health}).validate()


def test_bad_log_format_is_refused() -> None:
    with pytest.raises(AgentConfigError, match="log_format must be one of"):
        build_config({"trust_domain": "example.org", "log_format": "xml"}).validate()


# -- /live, /ready and expired SVIDs --------------------------------------------------------------

def _health(**checks: str) -> AgentHealth:
    all_checks = {"agent_svid": "ok", "sync": "ok", "svids": "ok", **checks}
    return AgentHealth(checks=all_checks, agent_svid_not_after=NOW, cached_svids=1, earliest_cached_not_after=NOW,
                       expired_cached_svids=0)


def test_ready_is_503_with_the_failing_check() -> None:
    cfg = HealthListener()
    assert respond("GET", "/ready", cfg, _health) == (200, {"ready": True, "checks": dict(_health().checks)})
    status, body = respond("GET", "/ready", cfg, lambda: _health(agent_svid="expired at 2026-12-07T05:00:00Z"))
    assert status == 503 and body["ready"] is False
    assert body["checks"] == {"agent_svid": "expired at 2026-12-07T05:00:00Z", "sync": "ok", "svids": "ok"}


def test_live_does_not_run_the_checks_and_other_paths_and_methods_are_refused() -> None:
    def never() -> AgentHealth:
        raise AssertionError("/live must not compute readiness")

    cfg = HealthListener(live_path="/healthz")
    assert respond("GET", "/healthz", cfg, never) == (200, {"live": True})
    assert respond("GET", "/live", cfg, never)[0] == 404
    assert respond("POST", "/ready", cfg, never)[0] == 405


def _view(not_after: datetime) -> WorkloadView:
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset())
    svid = IssuedSvid(entry_id="e1", spiffe_id=SID, cert_chain=(), key_der=b"", not_before=not_after - timedelta(
        hours=1), not_after=not_after)
    return WorkloadView(identities=(Identity(entry, svid),), bundle=None)


def test_an_expired_svid_is_refused_as_unavailable_and_says_why() -> None:
    assert expired_svid_error(_view(NOW + timedelta(seconds=1)), now=NOW, agent_not_after=None) is None
    err = expired_svid_error(_view(NOW), now=NOW, agent_not_after=NOW + timedelta(hours=1))
    assert err is not None and isinstance(err, NotReadyError)
    assert str(err) == ("agent: the X509-SVID of spiffe://example.org/w expired at 2026-12-07T05:00:00Z and was "
                        "not renewed (the server could not be reached); an expired SVID is never served")
    own = expired_svid_error(_view(NOW), now=NOW, agent_not_after=NOW - timedelta(seconds=5))
    assert own is not None and "the agent's own SVID expired at 2026-12-07T04:59:55Z" in str(own)
    assert status_for(err).name == "UNAVAILABLE"


# -- metrics --------------------------------------------------------------------------------------

def test_hot_histogram_exposes_what_a_prometheus_histogram_does() -> None:
    hot_registry, ref_registry = CollectorRegistry(), CollectorRegistry()
    hot = HotHistogram("demo_latency_seconds", "Latency", ("method",), buckets=(0.001, 0.01, 0.1),
                       registry=hot_registry)
    ref = Histogram("demo_latency_seconds", "Latency", ["method"], buckets=(0.001, 0.01, 0.1), registry=ref_registry)
    for method, value in [("A", 0.0005), ("A", 0.001), ("A", 0.05), ("B", 3.0)]:
        hot.observe(value, method)
        ref.labels(method).observe(value)
    assert hot.count("A") == 3 and hot.count("C") == 0

    def samples(text: bytes) -> set[str]:
        return {line for line in text.decode().splitlines() if "_created" not in line}

    assert samples(generate_latest(hot_registry)) == samples(generate_latest(ref_registry))


def test_expiry_gauges_are_absent_before_the_agent_runs_and_timestamps_after() -> None:
    registry = CollectorRegistry()
    gauges = ExpiryCollector(registry=registry)
    assert not [line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")]
    gauges.watch(lambda: ExpiryReading(agent_svid_not_after=NOW, cached_svids=2, earliest_cached_not_after=None,
                                       expired_cached_svids=0, ready=True))
    text = generate_latest(registry).decode()
    values = dict(line.split(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(values["spiffe_agent_svid_expiry_timestamp_seconds"]) == NOW.timestamp()
    assert "spiffe_agent_cached_svids 2.0" in text and "spiffe_agent_ready 1.0" in text
    assert "\nspiffe_agent_cached_svid_earliest_expiry_timestamp_seconds " not in text  # no cached SVID: no sample


# -- planned connection replacement -------------------------------------------------------------

async def test_a_call_cut_off_by_a_renewal_is_retried_on_the_new_connection_with_one_server() -> None:
    import random

    from spiffe_agent.manager.client import ServerCallError, ServerClient, server_ssl_context
    from spiffe_agent.manager.servers import ServerPool
    from spiffe_py.spiffeid import TrustDomain

    pool = ServerPool([("10.0.0.1", 8081)], TrustDomain.parse("example.org"), rng=random.Random(1))
    pool.connect(server_ssl_context((), insecure=True))
    used: list[ServerClient] = []

    async def mint(client: ServerClient) -> str:
        used.append(client)
        if len(used) == 1:
            assert not pool.replaced(client)
            pool.connect(server_ssl_context((), insecure=True))  # the agent renewed meanwhile
            raise ServerCallError("client: server unreachable: StreamTerminatedError")
        return "minted"

    assert await pool.call(mint) == "minted"
    assert used[1] is pool.client() and used[0] is not used[1] and pool.replaced(used[0])

    async def down(client: ServerClient) -> str:
        raise ServerCallError("client: server unreachable: ConnectionRefusedError")

    with pytest.raises(ServerCallError):  # a real failure of the one server still fails
        await pool.call(down)
