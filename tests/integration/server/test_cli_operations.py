"""Operator commands against one real server: selector validation, pretty and JSON output, entry
and bundle counts, agent purge, the runtime log level, wrong sockets, and backup/restore.

One server (module scope) serves every test in order; the last one stops it for the restore. Most
commands run the CLI's ``main()`` in this process against the server's socket (a process per call
costs the interpreter start-up each time); ``--version``, backup and restore run as processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spiffe_py._cli import rfc3339
from spiffe_server.cli import main
from spiffe_server.datastore import AttestedAgent, open_datastore
from tests.support.ca import CA
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
PARENT = f"{TD}/spire/agent/join_token/ops"
CONFIG = 'extra_selector_types = ["k8s"]\n'
FIELD = re.compile(r"^(\S.*?) +: (.*)$|^ +(\S.*)$")  # "Label   : value" or an aligned continuation


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    with ServerProc.start(config_text=CONFIG) as server:
        yield server


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _run(srv: ServerProc, *args: str, stdin: bytes | None = None, socket_path: Path | None = None) -> Result:
    """``spiffe-server <args> --socket-path <the server's>``, in this process."""
    out, err = io.StringIO(), io.StringIO()
    argv = [*args, "--socket-path", str(socket_path or srv.socket_path)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), contextlib.ExitStack() as stack:
        if stdin is not None:
            stack.enter_context(_stdin(stdin))
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return Result(code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _stdin(data: bytes) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(data))
    try:
        yield
    finally:
        sys.stdin = saved


def _ok(srv: ServerProc, *args: str) -> str:
    res = _run(srv, *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _json(srv: ServerProc, *args: str) -> Any:
    return json.loads(_ok(srv, *args, "--output", "json"))


def _fails(srv: ServerProc, *args: str, socket_path: Path | None = None) -> str:
    res = _run(srv, *args, socket_path=socket_path)
    assert res.returncode == 1 and res.stdout == "", (res.stdout, res.stderr)
    return res.stderr.strip()


def _create(srv: ServerProc, name: str, *selectors: str, extra: tuple[str, ...] = ()) -> dict[str, object]:
    args = [a for s in selectors for a in ("--selector", s)]
    return dict(_json(srv, "entry", "create", "--spiffe-id", f"{TD}/{name}", "--parent-id", PARENT, *args, *extra))


def test_selector_typos_are_refused_with_a_suggestion(srv: ServerProc) -> None:
    line = _fails(srv, "entry", "create", "--spiffe-id", f"{TD}/t", "--parent-id", PARENT,
                  "--selector", "unix:userid:1000")
    assert line.startswith("error: INVALID_ARGUMENT: entry.selectors: selector unix:userid:1000: unknown key 'userid'")
    assert "'unix:uid:1000'" in line
    line = _fails(srv, "entry", "create", "--spiffe-id", f"{TD}/t", "--parent-id", PARENT, "--selector", "uid:0")
    assert "did you mean 'unix:uid:0'?" in line
    assert "unknown selector type 'k8x'" in _fails(srv, "entry", "create", "--spiffe-id", f"{TD}/t", "--parent-id",
                                                   PARENT, "--selector", "k8x:ns:default")
    # a batch: the typo fails alone
    batch = json.dumps({"entries": [
        {"spiffe_id": f"{TD}/b1", "parent_id": PARENT, "selectors": ["unix:uid:1"]},
        {"spiffe_id": f"{TD}/b2", "parent_id": PARENT, "selectors": ["unix:usr:alice"]}]}).encode()
    res = _run(srv, "entry", "create", "--data", "-", "--output", "json", stdin=batch)
    codes = [r["status"]["code"] for r in json.loads(res.stdout)["results"]]
    assert res.returncode == 1 and codes == [0, 3]
    assert _json(srv, "entry", "count") == {"count": 1}


def test_agent_only_attestors_pass_by_config_or_flag(srv: ServerProc) -> None:
    assert _create(srv, "k8s", "k8s:ns:default")["selectors"] == ["k8s:ns:default"]  # extra_selector_types
    assert _fails(srv, "entry", "create", "--spiffe-id", f"{TD}/tpm", "--parent-id", PARENT,
                  "--selector", "tpm:pub:ab").startswith("error: INVALID_ARGUMENT")
    assert _create(srv, "tpm", "tpm:pub:ab", extra=("--allow-unknown-selector",))["selectors"] == ["tpm:pub:ab"]


def test_entry_count_filters(srv: ServerProc) -> None:
    _create(srv, "web", "unix:uid:1000", "unix:gid:50", extra=("--hint", "web"))
    _create(srv, "db", "unix:uid:1000")
    assert _json(srv, "entry", "count") == {"count": 5}
    assert _json(srv, "entry", "count", "--spiffe-id", f"{TD}/db") == {"count": 1}
    assert _json(srv, "entry", "count", "--parent-id", PARENT) == {"count": 5}
    assert _json(srv, "entry", "count", "--selector", "unix:uid:1000") == {"count": 1}  # exact by default
    assert _json(srv, "entry", "count", "--selector", "unix:uid:1000", "--match-selectors", "superset") == {
        "count": 2}
    assert _json(srv, "entry", "count", "--selector", "unix:uid:1000", "--selector", "unix:uid:1",
                        "--match-selectors", "any") == {"count": 3}
    assert _json(srv, "entry", "count", "--hint", "web") == {"count": 1}
    assert _ok(srv, "entry", "count", "--hint", "web") == "1 registration entry\n"
    assert _fails(srv, "entry", "count", "--match-selectors", "any") == "error: --match-selectors: needs --selector"


def _aligned(text: str) -> list[tuple[str, str]]:
    """The (label, value) lines of pretty output; every non-title line must be one."""
    rows = []
    for line in text.splitlines()[1:]:
        if not line:
            continue
        m = FIELD.match(line)
        assert m is not None, f"not an aligned field: {line!r}"
        rows.append((m.group(1) or rows[-1][0], m.group(2) or m.group(3)))
    return rows


def test_pretty_output_is_aligned_fields_with_times_and_json_is_stable(srv: ServerProc) -> None:
    created = _create(srv, "pretty", "unix:uid:7", extra=("--label", "team=a", "--expires-at", "2099-01-01T00:00:00Z",
                                                          "--jwt-claim", "tier=gold"))
    text = _ok(srv, "entry", "show", "--entry-id", str(created["id"]))
    assert text.startswith("Found 1 entry\n")
    rows = dict(_aligned(text))
    assert rows["Expires at"].startswith("2099-01-01T00:00:00Z (in ")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \((now|\d+[smhd] ago)\)", rows["Created at"])
    assert rows["Labels"] == "team=a" and rows["JWT claims"] == "tier=gold" and rows["X509-SVID TTL"] == "default"
    assert not re.search(r"[{}\[\]']", text)  # no Python reprs
    shown = _json(srv, "entry", "show", "--entry-id", str(created["id"]))["entries"][0]
    assert list(shown) == ["id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl", "dns_names",
                           "hint", "admin", "downstream", "federates_with", "expires_at", "revision", "created_at",
                           "labels", "bind_to_process", "max_lifetime", "jwt_claims", "quarantined"]
    assert shown["expires_at"] == 4070908800  # JSON keeps Unix seconds
    for args in (["token", "generate"], ["localauthority", "x509", "show"], ["bundle", "count"], ["logger", "get"],
                 ["revocation", "list"]):
        _aligned(_ok(srv, *args) if args[0] != "token" else "title\n" + _ok(srv, *args))


def test_bundle_count(srv: ServerProc, tmp_path: Path) -> None:
    assert _json(srv, "bundle", "count") == {"count": 1}
    roots = tmp_path / "other.pem"
    roots.write_bytes(CA.create("other.org").x509_bundle().to_pem())
    _ok(srv, "bundle", "set", "--id", "other.org", "--path", str(roots))
    assert _json(srv, "bundle", "count") == {"count": 2}
    assert _ok(srv, "bundle", "count") == "2 bundles (this trust domain's and 1 federated)\n"


def _agent(spiffe_id: str, expires: datetime, **kw: object) -> AttestedAgent:
    return AttestedAgent(spiffe_id=spiffe_id, attestation_type="join_token", serial="0a", expires_at=expires,
                         created_at=expires - timedelta(hours=1), updated_at=expires - timedelta(hours=1), **kw)


def test_agent_list_marks_expired_and_purge_removes_only_long_expired(srv: ServerProc) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    agents = {
        "old": _agent(f"{TD}/spire/agent/x/old", now - timedelta(days=3)),
        "recent": _agent(f"{TD}/spire/agent/x/recent", now - timedelta(minutes=5)),
        "banned": _agent(f"{TD}/spire/agent/x/banned", now - timedelta(days=3), banned=True),
        "renewed": _agent(f"{TD}/spire/agent/x/renewed", now - timedelta(days=3), new_serial="0b",
                          new_expires_at=now + timedelta(hours=1)),
        "live": _agent(f"{TD}/spire/agent/x/live", now + timedelta(hours=1)),
    }
    store = open_datastore(srv.data_dir / "datastore.sqlite3")  # the server's own file, as another process
    try:
        for agent in agents.values():
            store.create_agent(agent)
    finally:
        store.close()
    listed = _ok(srv, "agent", "list")
    assert listed.startswith("Found 5 attested agents\n")
    status = {}
    for block in listed.split("\n\n")[1:]:
        rows = dict(_aligned("title\n" + block))
        status[rows["SPIFFE ID"].rsplit("/", 1)[1]] = (rows["Status"], rows["Expires at"])
    assert {k: v[0] for k, v in status.items()} == {"old": "expired", "recent": "expired", "banned": "banned",
                                                     "renewed": "active", "live": "active"}
    assert status["old"][1] == f"{rfc3339(agents['old'].expires_at.timestamp())} (expired 3d ago)"
    assert status["live"][1].endswith("(in 59m)") or status["live"][1].endswith("(in 1h)")

    dry = _json(srv, "agent", "purge", "--expired-for", "24h", "--dry-run")
    assert [a["spiffe_id"] for a in dry["agents"]] == [agents["old"].spiffe_id] and dry["dry_run"] is True
    assert _json(srv, "agent", "count") == {"count": 5}
    assert _ok(srv, "agent", "purge", "--expired-for", "1d").startswith(
        "Purged 1 agent whose SVID expired more than 24h ago\n")
    assert sorted(a["spiffe_id"].rsplit("/", 1)[1] for a in _json(srv, "agent", "list")["agents"]) == [
        "banned", "live", "recent", "renewed"]
    assert _fails(srv, "agent", "purge", "--expired-for", "0") == (
        "error: INVALID_ARGUMENT: expired_for: must be within 1..3153600000 seconds, got 0")


def test_logger_changes_the_running_servers_level(srv: ServerProc) -> None:
    assert _json(srv, "logger", "get") == {"current_level": "info", "launch_level": "info"}
    assert _json(srv, "logger", "set", "--level", "error") == {"current_level": "error", "launch_level": "info"}
    _create(srv, "quiet", "unix:uid:11")
    assert _json(srv, "logger", "reset") == {"current_level": "info", "launch_level": "info"}
    _create(srv, "loud", "unix:uid:12")
    log = srv.log_text()
    assert f"{TD}/loud" in log and f"{TD}/quiet" not in log  # "entry created" is an info record
    assert _json(srv, "logger", "set", "--level", "warn")["current_level"] == "warning"
    assert "log level set" in srv.log_text()
    _ok(srv, "logger", "reset")
    assert _run(srv, "logger", "set", "--level", "loud").returncode == 2


def _serve_forever(sock: socket.socket, reply: bytes) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(reply)


@pytest.mark.parametrize("reply", [b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b""])
def test_a_socket_that_is_not_the_admin_api_is_named(srv: ServerProc, tmp_path: Path, reply: bytes) -> None:
    path = tmp_path / "other.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        sock.listen()
        threading.Thread(target=_serve_forever, args=(sock, reply), daemon=True).start()
        line = _fails(srv, "entry", "count", socket_path=path)
    assert "this is not a spiffe-server admin socket" in line, line


def _local(*args: str) -> subprocess.CompletedProcess[str]:
    """``spiffe-server backup|restore``: local commands, no --socket-path."""
    return subprocess.run([sys.executable, "-m", "spiffe_server.cli", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def _local_fails(*args: str) -> str:
    res = _local(*args)
    assert res.returncode == 1 and res.stdout == "", (res.stdout, res.stderr)
    return res.stderr.strip()


def test_backup_while_serving_then_restore_into_a_stopped_server(srv: ServerProc, tmp_path: Path) -> None:
    entries_before = _json(srv, "entry", "show")["entries"]
    roots_before = _ok(srv, "bundle", "show")
    archive = tmp_path / "backup.tar.gz"
    out = _local("backup", "--data-dir", str(srv.data_dir), "--out", str(archive))  # the server keeps serving
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"backup written to {archive}: ")
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert names[0] == "manifest.json" and "datastore.sqlite3" in names and any(n.startswith("keys/") for n in names)
    assert _local_fails("backup", "--data-dir", str(srv.data_dir), "--out", str(archive)).startswith("error: backup:")

    target = tmp_path / "restored"
    assert "a server answers" in _local_fails("restore", "--data-dir", str(srv.data_dir), "--from", str(archive))
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(tampered, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "datastore.sqlite3":
                data = data[:-1] + bytes([data[-1] ^ 1])
            member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    assert "does not match its SHA-256" in _local_fails("restore", "--data-dir", str(target), "--from", str(tampered))
    assert not (target / "datastore.sqlite3").exists() and not (target / "keys").exists()  # nothing replaced

    assert _local("restore", "--data-dir", str(target), "--from", str(archive)).returncode == 0
    assert "--force" in _local_fails("restore", "--data-dir", str(target), "--from", str(archive))
    assert _local("restore", "--data-dir", str(target), "--from", str(archive), "--force").returncode == 0
    srv.stop()
    with ServerProc.start(data_dir=target) as restored:
        assert restored.cli_json("entry", "show")["entries"] == entries_before
        assert restored.cli("bundle", "show").stdout == roots_before  # the same CA keys
        assert restored.cli_json("healthcheck")["ready"] is True
