"""Agent config: strict TOML keys, flag overrides, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from spiffe_agent.app import prepare_socket_dir
from spiffe_agent.cli import _overrides, build_parser
from spiffe_agent.config import AgentConfig, build_config, load_config, parse_server_address
from spiffe_agent.errors import AgentConfigError


def test_unknown_toml_key_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('trust_domain = "example.org"\nserver_adress = "x"\n')
    with pytest.raises(AgentConfigError, match="unknown keys: \\['server_adress'\\]"):
        load_config(f, {})


def test_flags_override_file(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('trust_domain = "example.org"\nserver_port = 9000\nworkload_attestors = ["unix", "docker"]\n')
    cfg = load_config(f, {"server_port": 9100, "join_token": None})
    assert (cfg.server_port, cfg.workload_attestors, cfg.join_token) == (9100, ("unix", "docker"), None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"trust_domain": "Bad TD"}, "invalid trust_domain"),
        ({"trust_domain": "td", "server_port": 0}, "server_port out of range"),
        ({"trust_domain": "td", "workload_attestors": ["k8s"]}, "workload_attestors must be among"),
        ({"trust_domain": "td", "socket_path": "rel.sock"}, "socket_path must be absolute"),
        ({"trust_domain": "td", "trust_bundle": "/nonexistent.pem"}, "trust_bundle file not found"),
        ({"trust_domain": "td", "log_level": "loud"}, "log_level must be one of"),
        ({"trust_domain": "td", "join_token": "t"}, "needs trust_bundle or insecure_bootstrap"),
        ({"trust_domain": "td", "audit_fsync": "never"}, "audit_fsync must be one of"),
        ({"trust_domain": "td", "audit_flush_interval": 0}, "audit_flush_interval must be in"),
        ({"trust_domain": "td", "audit_flush_interval": 60}, "audit_flush_interval must be in"),
        ({"trust_domain": "td", "workload_api_max_message_bytes": 10}, "workload_api_max_message_bytes: must be"),
        ({"trust_domain": "td", "workload_api_max_message_bytes": 1 << 30}, "workload_api_max_message_bytes: must be"),
    ],
)
def test_validate_rejects(values: dict[str, object], message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        build_config(values).validate()


def test_bundle_and_insecure_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "b.pem").write_text("x")
    cfg = AgentConfig(trust_domain="td", trust_bundle=str(tmp_path / "b.pem"), insecure_bootstrap=True)
    with pytest.raises(AgentConfigError, match="mutually exclusive"):
        cfg.validate()


def test_audit_settings_from_toml(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('trust_domain = "td"\naudit_fsync = "always"\naudit_flush_interval = 1\n')
    cfg = load_config(f, {})
    cfg.validate()
    assert (cfg.audit_fsync, cfg.audit_flush_interval) == ("always", 1.0)
    assert (AgentConfig().audit_fsync, AgentConfig().audit_flush_interval) == ("interval", 0.05)


def test_type_errors_name_the_key() -> None:
    with pytest.raises(AgentConfigError, match="server_port must be of type int"):
        build_config({"server_port": "8081"})


def test_repr_hides_join_token() -> None:
    assert "s3cret" not in repr(AgentConfig(trust_domain="td", join_token="s3cret"))


def test_cli_run_flags_parse() -> None:
    flags = ["--workload-attestor", "unix", "--workload-attestor", "docker", "--insecure-bootstrap"]
    args = build_parser().parse_args(["run", "--trust-domain", "td", *flags])
    assert args.workload_attestor == ["unix", "docker"]
    assert args.insecure_bootstrap is True


def test_socket_dir_refuses_world_writable(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(AgentConfigError, match="not group/world-writable"):
        prepare_socket_dir(shared / "api.sock")


def test_socket_dir_refuses_non_socket_file(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "api.sock").write_text("not a socket")
    with pytest.raises(AgentConfigError, match="not a socket"):
        prepare_socket_dir(tmp_path / "d" / "api.sock")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_connection_limits_and_attestor_tables_are_validated() -> None:
    cfg = build_config({"trust_domain": "example.org", "attestor": {"unix": {"discover_workload_path": True}}})
    assert cfg.attestor_tables()["unix"] == {"discover_workload_path": True, "workload_size_limit": 0}
    assert (cfg.max_connections_per_uid, cfg.connection_idle_timeout) == (64, 300.0)
    with pytest.raises(AgentConfigError, match="max_connections_per_uid"):
        AgentConfig(trust_domain="example.org", max_connections_per_uid=0).validate()
    with pytest.raises(AgentConfigError, match=r"\[attestor.unix\] must be a table"):
        AgentConfig(trust_domain="example.org", attestor={"unix": 1}).validate()


@pytest.mark.parametrize(("text", "expected"), [
    ("10.0.0.1", ("10.0.0.1", 8081)),
    ("srv.example.org:9081", ("srv.example.org", 9081)),
    ("[::1]:9081", ("::1", 9081)),
    ("[fd00::2]", ("fd00::2", 8081)),
    ("fd00::2", ("fd00::2", 8081)),
])
def test_server_address_port_defaults_to_server_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_server_address(text, 8081) == expected


@pytest.mark.parametrize("text", ["", ":8081", "host:", "host:0", "host:65536", "host:8o81", "host:+81", "[::1",
                                  "[::1]x", "[::1]:", "a b:1", "user@host:1", "host/x", "h" * 254, "host:٨٠"])
def test_server_address_rejects(text: str) -> None:
    with pytest.raises(AgentConfigError, match="invalid server address"):
        parse_server_address(text, 8081)


def test_server_address_string_or_list_from_toml_and_repeated_flag(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text('trust_domain = "example.org"\nserver_address = ["a.example", "b.example:9000"]\nserver_port = 7000\n')
    assert load_config(f, {}).server_addresses() == (("a.example", 7000), ("b.example", 9000))
    f.write_text('trust_domain = "example.org"\nserver_address = "a.example"\n')
    assert load_config(f, {}).server_addresses() == (("a.example", 8081),)
    args = build_parser().parse_args(["run", "--server-address", "x:1", "--server-address", "y", "--server-port", "2"])
    assert load_config(f, _overrides(args)).server_addresses() == (("x", 1), ("y", 2))  # flags replace the file's


@pytest.mark.parametrize(("value", "message"), [
    (7, "server_address must be a string or a list of strings"),
    (["a", 7], "server_address must be a string or a list of strings"),
    ([], "give 1 to 16 server addresses"),
    ([f"s{i}" for i in range(17)], "give 1 to 16 server addresses"),
    (["ok", "bad:port"], "invalid server address: 'bad:port'"),
])
def test_server_address_values_are_validated(value: object, message: str) -> None:
    with pytest.raises(AgentConfigError, match=message):
        build_config({"trust_domain": "example.org", "server_address": value}).validate()
