"""The server CLI starts fast: a simple admin call loads none of the server's heavy dependencies,
its admin socket default agrees with the server's, and duration flags take Go-style durations."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spiffe_py._duration import parse_seconds, parse_whole_seconds
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.cli import build_parser
from spiffe_server.cli._common import default_socket, seconds_arg
from spiffe_server.config import ServerConfig

HEAVY = ("psycopg", "celpy", "cel", "prometheus_client", "cryptography", "spiffe_server.app", "spiffe_server.datastore",
         "spiffe_server.config", "spiffe_server.api", "asyncio", "grpclib", "tarfile")

_PROBE = """
import json, sys
from spiffe_server.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def _loaded(tmp_path: Path, *argv: str) -> tuple[int, list[str]]:
    res = subprocess.run([sys.executable, "-c", _PROBE, *argv, "--socket-path", str(tmp_path / "none.sock")],
                         capture_output=True, text=True, timeout=60, check=False)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["code"], out["modules"]


@pytest.mark.parametrize("argv", [("entry", "show", "--entry-id", "x"), ("entry", "count"),
                                  ("agent", "list"), ("token", "generate", "--ttl", "1h")])
def test_a_simple_admin_call_imports_no_heavy_dependency(tmp_path: Path, argv: tuple[str, ...]) -> None:
    code, modules = _loaded(tmp_path, *argv)
    assert code == 1  # no server there: the call itself ran
    heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []
    nouns = {m.split(".")[2] for m in modules if m.startswith("spiffe_server.cli.") and m.split(".")[2][0] != "_"}
    assert nouns == {"mint" if argv[0] in ("x509", "jwt") else argv[0]}  # only the called command's module


def test_the_admin_socket_default_is_the_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPIFFE_SERVER_SOCKET", raising=False)
    server_default = ServerConfig(trust_domain=TrustDomain.parse("example.org")).admin_socket
    assert default_socket() == str(server_default)
    monkeypatch.setenv("SPIFFE_SERVER_SOCKET", "/run/x/api.sock")
    assert default_socket() == "/run/x/api.sock"


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400),
                                               ("1.5h", 5400), ("1d", 86400), ("2000ms", 2), ("-5", -5)])
def test_duration_flags_take_go_durations_and_seconds(text: str, seconds: int) -> None:
    assert seconds_arg(text) == seconds


@pytest.mark.parametrize("text", ["", "1h 30m", "5x", "1500ms", "-5m", "h", "1e3", "9" * 70, "3000000000"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds_arg(text)


def test_one_parser_for_every_duration() -> None:
    assert parse_seconds("250ms") == 0.25
    assert parse_whole_seconds(90) == 90
    with pytest.raises(ValueError, match="whole number"):
        parse_whole_seconds("1.5s")
    with pytest.raises(ValueError):
        parse_seconds(True)


@pytest.mark.parametrize("argv", [
    ["entry", "create", "--spiffe-id", "spiffe://example.org/a", "--x509-svid-ttl", "1h30m", "--jwt-svid-ttl", "5m",
     "--max-lifetime", "2h"],
    ["token", "generate", "--ttl", "10m"], ["x509", "mint", "--spiffe-id", "spiffe://example.org/a", "--ttl", "1h"],
    ["jwt", "mint", "--spiffe-id", "spiffe://example.org/a", "--audience", "x", "--ttl", "90s"],
])
def test_every_duration_flag_parses_go_durations(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    values = [getattr(args, n) for n in ("x509_svid_ttl", "jwt_svid_ttl", "max_lifetime", "ttl") if hasattr(args, n)]
    assert values in ([5400, 300, 7200], [600], [3600], [90])


def test_config_durations_share_the_parser() -> None:
    from spiffe_agent.config import build_config
    from spiffe_server.config import parse_config

    cfg = parse_config('trust_domain = "x.org"\nca_ttl = "1h30m"\ndefault_x509_svid_ttl = "900"')
    assert (cfg.ca_ttl.total_seconds(), cfg.default_x509_svid_ttl.total_seconds()) == (5400, 900)
    agent = build_config({"resync_interval": "1m30s", "connection_idle_timeout": "5m", "audit_flush_interval": "50ms"})
    assert (agent.resync_interval, agent.connection_idle_timeout, agent.audit_flush_interval) == (90, 300, 0.05)
