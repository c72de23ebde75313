"""spiffe_server.config: TOML + flag overrides, unknown keys, defaults, warnings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from spiffe_server.config import ConfigError, load_config, parse_config, parse_duration


def test_defaults_with_only_trust_domain() -> None:
    cfg = parse_config("", {"trust_domain": "example.org", "data_dir": "/tmp/d"})
    assert str(cfg.trust_domain) == "example.org"
    assert (cfg.bind_address, cfg.bind_port) == ("127.0.0.1", 8081)
    assert cfg.admin_socket == Path("/tmp/d/api.sock")
    assert cfg.database_url == "/tmp/d/datastore.sqlite3"
    assert (cfg.log_level, cfg.log_format, cfg.ca_key_type) == ("info", "text", "ec-p256")
    assert cfg.ca_ttl == timedelta(hours=24)
    assert cfg.default_x509_svid_ttl == timedelta(hours=1)
    assert cfg.default_jwt_svid_ttl == timedelta(minutes=5)
    assert cfg.health is None and cfg.metrics is None
    assert set(cfg.node_attestors) == {"join_token"}
    assert cfg.warnings() == []


def test_full_file_parses() -> None:
    cfg = parse_config("""
trust_domain = "example.org"
bind_port = 9000
database = "postgresql://postgres@127.0.0.1:5432/test"
ca_ttl = "2h"
default_x509_svid_ttl = 600
admin_uids = [1000, 1001]
[upstream_authority]
cert_file = "/etc/up.pem"
key_file = "/etc/up.key"
[node_attestors.x509pop]
ca_bundle_path = "/etc/ca.pem"
[health]
bind_port = 8088
[metrics]
""")
    assert cfg.bind_port == 9000
    assert cfg.database_url.startswith("postgresql://")
    assert cfg.ca_ttl == timedelta(hours=2) and cfg.default_x509_svid_ttl == timedelta(seconds=600)
    assert cfg.admin_uids == (1000, 1001)
    assert cfg.upstream_authority is not None and cfg.upstream_authority.key_file == Path("/etc/up.key")
    assert set(cfg.node_attestors) == {"join_token", "x509pop"}
    assert cfg.health is not None and cfg.health.bind_port == 8088 and cfg.health.live_path == "/live"
    assert cfg.metrics is not None and cfg.metrics.bind_port == 9988


def test_flags_override_file() -> None:
    cfg = parse_config('trust_domain = "a.org"\nbind_port = 1', {"trust_domain": "b.org", "bind_port": 2,
                                                                 "log_level": None})
    assert (str(cfg.trust_domain), cfg.bind_port, cfg.log_level) == ("b.org", 2, "info")


@pytest.mark.parametrize(("text", "message"), [
    ('trust_domain = "x.org"\nbogus = 1', "config: unknown key 'bogus'"),
    ('trust_domain = "x.org"\n[health]\nport = 1', "config: unknown key 'health.port'"),
    ('trust_domain = "x.org"\n[node_attestors.x509pop]\nca = "a"', "config: node_attestors.x509pop.ca: unknown key"),
    ('trust_domain = "x.org"\n[node_attestors.x509pop]', "config: node_attestors.x509pop.ca_bundle_path: required"),
    ('trust_domain = "x.org"\n[node_attestors.tpm]', "config: unknown key 'node_attestors.tpm'"),
    ('trust_domain = "x.org"\n[node_attestors.join_token]\nenabled = 1',
     "config: node_attestors.join_token.enabled: expected"),
    ("bind_port = 1", "config: trust_domain: required"),
    ('trust_domain = "Bad_TD"', "config: trust_domain: spiffeid:"),
    ('trust_domain = "x.org"\nbind_port = 70000', "config: bind_port: must be within 0..65535"),
    ('trust_domain = "x.org"\nbind_address = "nowhere"', "config: bind_address: must be an IP address"),
    ('trust_domain = "x.org"\nlog_format = "xml"', "config: log_format: must be one of json, text"),
    ('trust_domain = "x.org"\nca_key_type = "dsa"', "config: ca_key_type: must be one of"),
    ('trust_domain = "x.org"\nca_ttl = "-5m"', "config: ca_ttl: must be a duration"),
    ('trust_domain = "x.org"\nca_ttl = 0', "config: ca_ttl: must be positive"),
    ('trust_domain = "x.org"\nadmin_uids = [-1]', "config: admin_uids: must be non-negative"),
    ('trust_domain = "x.org"\n[upstream_authority]\ncert_file = "a"', "config: upstream_authority.key_file: required"),
    ('trust_domain = "x.org"\n[health]\nlive_path = "live"', "config: health.live_path: must start with '/'"),
    ('trust_domain = = "x.org"', "config: not valid TOML"),
    ('trust_domain = "x.org"\nbind_port = "8081"', "config: bind_port: expected an integer"),
    ('trust_domain = "x.org"\n[serving]\nmax_message = 1', "config: unknown key 'serving.max_message'"),
    ('trust_domain = "x.org"\n[serving]\nagent_api_max_message_bytes = 100',
     "config: serving.agent_api_max_message_bytes: must be an integer from 1024 to 67108864"),
    ('trust_domain = "x.org"\n[serving]\nadmin_api_max_message_bytes = 4294967295',
     "config: serving.admin_api_max_message_bytes: must be an integer from 1024"),
    ('trust_domain = "x.org"\n[serving]\nmax_connections_per_ip = 0',
     "config: serving.max_connections_per_ip: must be"),
    ('trust_domain = "x.org"\n[serving]\nidle_timeout = "0s"', "config: serving.idle_timeout: must be positive"),
])
def test_invalid_config_names_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text)
    assert str(exc.value).startswith(message)


def test_serving_limits_default_and_parse() -> None:
    from datetime import timedelta

    default = parse_config('trust_domain = "x.org"').serving
    assert (default.agent_api_max_message_bytes, default.admin_api_max_message_bytes) == (4 << 20, 4 << 20)
    assert default.connection_limits().max_per_peer == 128
    cfg = parse_config('trust_domain = "x.org"\n[serving]\nagent_api_max_message_bytes = 65536\n'
                       'max_connections_per_ip = 7\ntls_handshake_timeout = "3s"\nidle_timeout = "2m"\n').serving
    assert cfg.agent_api_max_message_bytes == 65536 and cfg.admin_api_max_message_bytes == 4 << 20
    assert cfg.tls_handshake_timeout == timedelta(seconds=3)
    limits = cfg.connection_limits()
    assert (limits.max_per_peer, limits.handshake_timeout, limits.idle_timeout) == (7, 3.0, 120.0)


def test_long_default_socket_is_rejected() -> None:
    with pytest.raises(ConfigError, match="config: socket_path: default"):
        parse_config("", {"trust_domain": "x.org", "data_dir": "/" + "d" * 120})


def test_svid_ttl_over_ca_ttl_sixth_warns() -> None:
    cfg = parse_config('trust_domain = "x.org"\nca_ttl = "60s"\n'
                       'default_x509_svid_ttl = "20s"\ndefault_jwt_svid_ttl = "10s"')
    (warning,) = cfg.warnings()
    assert warning.startswith("config: default_x509_svid_ttl (20s) exceeds ca_ttl/6 (10s)")


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config: cannot read"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(("value", "seconds"), [(5, 5), ("90s", 90), ("5m", 300), ("24h", 86400), ("1d", 86400)])
def test_parse_duration(value: object, seconds: int) -> None:
    assert parse_duration(value, "k") == timedelta(seconds=seconds)


def test_agent_limits_parse_with_safe_defaults() -> None:
    default = parse_config('trust_domain = "example.org"').agent_limits
    assert (default.sign_burst, default.revocation_share) == (20_000, 50_000)
    cfg = parse_config('trust_domain = "example.org"\n[agent_limits]\nsign_rate = 0.5\nrevoke_quota = 7\n')
    assert (cfg.agent_limits.sign_rate, cfg.agent_limits.revoke_quota, cfg.agent_limits.sign_burst) == (0.5, 7, 20_000)


@pytest.mark.parametrize(("body", "message"), [
    ("sign_brust = 1", "unknown key 'agent_limits.sign_brust'"),
    ("sign_burst = 499", "agent_limits.sign_burst: must be within 500.."),
    ("sign_rate = 0", "agent_limits.sign_rate: must be a positive number"),
    ("revoke_quota = true", "agent_limits.revoke_quota: expected an integer"),
    ("revocation_share = 0", "agent_limits.revocation_share: must be within 1.."),
])
def test_agent_limits_errors_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f'trust_domain = "example.org"\n[agent_limits]\n{body}\n')


def test_jwt_key_type_is_independent_of_the_ca_key_type() -> None:
    cfg = parse_config('trust_domain = "example.org"\nca_key_type = "ec-p256"\njwt_key_type = "rsa-2048"\n')
    assert (cfg.ca_key_type, cfg.jwt_key_type) == ("ec-p256", "rsa-2048")
    assert parse_config('trust_domain = "example.org"\n').jwt_key_type == ""  # "": same as ca_key_type
    with pytest.raises(ConfigError, match="jwt_key_type"):
        parse_config('trust_domain = "example.org"\njwt_key_type = "dsa"\n')
def test_audit_retention_parses_and_keeps_everything_by_default() -> None:
    default = parse_config('trust_domain = "example.org"').audit_retention
    assert (default.max_age, default.max_records) == (None, None)
    cfg = parse_config('trust_domain = "example.org"\n[audit_retention]\nmax_age = "720h"\nmax_records = 1000000\n'
                       'prune_interval = "10m"\n').audit_retention
    assert (cfg.max_age, cfg.max_records, cfg.prune_interval) == (timedelta(days=30), 1_000_000, timedelta(minutes=10))


@pytest.mark.parametrize(("body", "message"), [
    ("max_rows = 1", "unknown key 'audit_retention.max_rows'"),
    ("max_records = 0", "audit_retention.max_records: must be within 1.."),
    ("max_records = true", "audit_retention.max_records: expected an integer"),
    ('max_age = "-1h"', "audit_retention.max_age"),
])
def test_audit_retention_errors_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f'trust_domain = "example.org"\n[audit_retention]\n{body}\n')


def test_audit_forwarders_default_to_none_and_parse() -> None:
    assert parse_config('trust_domain = "example.org"').audit.forwarders == frozenset()  # agents only
    cfg = parse_config('trust_domain = "example.org"\n[audit]\nforwarders = ["spiffe://example.org/broker"]\n')
    assert cfg.audit.forwarders == frozenset({"spiffe://example.org/broker"})


@pytest.mark.parametrize(("body", "message"), [
    ('forwarders = "spiffe://example.org/broker"', "audit.forwarders: expected a list"),
    ('forwarders = ["example.org/broker"]', "audit.forwarders: .*scheme"),
    ('forwarders = ["spiffe://other.org/broker"]', "audit.forwarders: 'spiffe://other.org/broker' is not in trust "
                                                   "domain 'example.org'"),
    ('forwarders = ["spiffe://example.org/spire/agent/x"]', "audit.forwarders: .* reserved for the server and agents"),
    ("forwarderz = []", "unknown key 'audit.forwarderz'"),
])
def test_audit_forwarders_errors_name_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(f'trust_domain = "example.org"\n[audit]\n{body}\n')
