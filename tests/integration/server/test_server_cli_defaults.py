"""The CLI against a real server: ``SPIFFE_SERVER_SOCKET`` picks the admin socket, and
duration flags given as Go-style durations reach the server as seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.support.server_proc import ServerProc


def test_spiffe_server_socket_sets_the_admin_socket(server: ServerProc) -> None:
    env = {**os.environ, "SPIFFE_SERVER_SOCKET": str(server.socket_path)}
    res = subprocess.run([sys.executable, "-m", "spiffe_server.cli", "entry", "count", "--output", "json"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (res.returncode, json.loads(res.stdout or "null")) == (0, {"count": 0}), res.stderr
    # an explicit --socket-path still wins
    cli = [sys.executable, "-m", "spiffe_server.cli"]
    res = subprocess.run([*cli, "entry", "count", "--socket-path", "/nonexistent.sock"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 1 and "/nonexistent.sock" in res.stderr


def test_duration_flags_take_go_durations(server: ServerProc) -> None:
    before = time.time()
    token = server.cli_json("token", "generate", "--ttl", "1h30m")
    assert 5400 - 5 <= token["expires_at"] - before <= 5400 + 5
    entry = server.cli_json("entry", "create", "--spiffe-id", "spiffe://example.org/web", "--parent-id",
                            "spiffe://example.org/node", "--selector", "unix:uid:1", "--x509-svid-ttl", "1h",
                            "--jwt-svid-ttl", "5m")
    assert (entry["x509_svid_ttl"], entry["jwt_svid_ttl"]) == (3600, 300)
    bad = server.cli("token", "generate", "--ttl", "1h 30m", check=False)
    assert bad.returncode == 2 and "must be a duration such as" in bad.stderr
