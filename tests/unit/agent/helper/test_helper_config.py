"""helper.toml validation (pure): spiffe-helper's key names and rules."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

import pytest

from spiffe_agent.helper.config import DEFAULT_AGENT_ADDRESS, HelperConfigError, build_config, load_config

X509 = 'cert_dir = "/d"\nsvid_file_name = "c.pem"\nsvid_key_file_name = "k.pem"\nsvid_bundle_file_name = "b.pem"\n'


def _cfg(text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return build_config(tomllib.loads(text), env=env or {})


def test_full_config_with_spire_key_names() -> None:
    cfg = _cfg(X509 + 'agent_address = "/run/a.sock"\ncmd = "nginx"\ncmd_args = "-c /x -g \\"daemon off;\\""\n'
               'renew_signal = "SIGHUP"\npid_file_name = "/run/n.pid"\n'
               'jwt_svids = [{jwt_audience = "sts.amazonaws.com", jwt_svid_file_name = "aws.jwt"},'
               ' {jwt_audience = "a", jwt_extra_audiences = ["b"], jwt_svid_file_name = "x.jwt"}]\n')
    assert cfg.agent_address == "unix:///run/a.sock"
    assert cfg.cmd_args == ("-c", "/x", "-g", "daemon off;")
    assert cfg.renew_signal is signal.SIGHUP and cfg.pid_file_name == Path("/run/n.pid")
    assert [(j.audiences, j.file_name) for j in cfg.jwt_svids] == [(("sts.amazonaws.com",), "aws.jwt"),
                                                                   (("a", "b"), "x.jwt")]
    assert cfg.daemon_mode is True and cfg.writes_x509


def test_agent_address_defaults_to_the_environment_then_spire_default() -> None:
    assert _cfg(X509, {"SPIFFE_ENDPOINT_SOCKET": "unix:///e.sock"}).agent_address == "unix:///e.sock"
    assert _cfg(X509).agent_address == DEFAULT_AGENT_ADDRESS


@pytest.mark.parametrize(("text", "message"), [
    (X509 + "bogus = 1\n", "unknown key(s) bogus"),
    ('svid_file_name = "c.pem"\n', "cert_dir: required"),
    ('cert_dir = "/d"\nsvid_file_name = "c.pem"\n', "set all three or none"),
    ('cert_dir = "/d"\n', "nothing to write"),
    (X509 + 'pid_file_name = "/p"\n', "pid_file_name: needs renew_signal"),
    (X509 + 'renew_signal = "SIGNOPE"\n', "unknown signal"),
    (X509 + "daemon_mode = 1\n", "expected true or false"),
    (X509.replace('"c.pem"', '"../c.pem"'), "plain file name inside cert_dir"),
    ('cert_dir = "/d"\njwt_svids = [{jwt_audience = "a"}]\n', "jwt_audience and jwt_svid_file_name are required"),
    ('cert_dir = "/d"\njwt_svids = [{jwt_audience = "a", jwt_svid_file_name = "f", x = 1}]\n', "unknown key(s) x"),
    (X509 + 'cmd_args = "\\"unclosed"\n', "cmd_args"),
])
def test_invalid_configs_name_the_key(text: str, message: str) -> None:
    with pytest.raises(HelperConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _cfg(text)


def test_load_config_needs_an_existing_cert_dir_and_the_flag_overrides(tmp_path: Path) -> None:
    path = tmp_path / "helper.toml"
    path.write_text(X509.replace("/d", str(tmp_path)))
    assert load_config(path, daemon_mode=False).daemon_mode is False
    path.write_text(X509.replace("/d", str(tmp_path / "missing")))
    with pytest.raises(HelperConfigError, match="not an existing directory"):
        load_config(path)
