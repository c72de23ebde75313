"""Fault injection with real processes: kill -9 of the server mid signing and mid write, a full
filesystem under SQLite, and a PostgreSQL restart while an agent is syncing.

Each test checks the same three things: nothing acknowledged is lost, nothing is corrupted
(SQLite ``integrity_check``, ``audit verify``), and the agent and its workloads carry on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent.test_agent_failover import AGENT_CONFIG, Fetcher
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
UID = os.geteuid()


def _kill9(srv: ServerProc) -> None:
    assert srv.proc is not None
    srv.proc.kill()
    srv.proc.wait()
    srv.proc = None


def _sql(db: Path, query: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute(query).fetchall())
    finally:
        conn.close()


def _batch(parent: str, start: int, count: int) -> bytes:
    return json.dumps({"entries": [
        {"spiffe_id": f"{TD}/bulk{n}", "parent_id": parent,
         "selectors": [{"type": "unix", "value": f"uid:{90000 + n}"}]}
        for n in range(start, start + count)]}).encode()


def _assert_intact(srv: ServerProc, db: Path) -> None:
    assert _sql(db, "PRAGMA integrity_check") == [("ok",)]
    verify = srv.cli_json("audit", "verify")
    assert verify["ok"] is True, verify


def _agent_config(srv: ServerProc) -> Path:
    path = srv.data_dir.parent / "agent.toml"
    path.write_text(AGENT_CONFIG)
    return path


def test_kill_9_mid_signing_batch_loses_nothing_and_the_agent_resumes() -> None:
    with ServerProc.start() as srv:
        db = srv.data_dir / "datastore.sqlite3"
        with AgentProc.start(srv, "ag", ("--config", str(_agent_config(srv)))) as agent:
            agent.wait_ready()
            srv.cli("entry", "create", "--data", "-", stdin=_batch(agent.agent_id, 0, 700))
            mine = srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/mine", "--parent-id", agent.agent_id,
                                "--selector", f"unix:uid:{UID}")["id"]
            # the agent now mints 701 SVIDs in batches of 500: kill the server while it signs
            deadline = time.monotonic() + 30
            while _sql(db, "SELECT COUNT(*) FROM issuances") == [(0,)] and time.monotonic() < deadline:
                time.sleep(0.005)
            _kill9(srv)
            _assert_db_ok(db)
            srv.launch()
            _assert_intact(srv, db)
            assert _sql(db, "SELECT COUNT(*) FROM entries") == [(701,)]
            with Fetcher(agent.socket_path) as fetcher:
                deadline = time.monotonic() + 40
                while fetcher.ok < 5 and time.monotonic() < deadline:
                    time.sleep(0.2)
            assert fetcher.ok >= 5, (fetcher.failures[:3], agent.log_text()[-3000:])
            assert mine in srv.cli("entry", "show", "--entry-id", mine).stdout


def _assert_db_ok(db: Path) -> None:
    assert _sql(db, "PRAGMA integrity_check") == [("ok",)]


def test_kill_9_mid_batch_write_leaves_a_consistent_store_and_the_rest_can_be_written() -> None:
    with ServerProc.start() as srv:
        db = srv.data_dir / "datastore.sqlite3"
        parent = f"{TD}/spire/agent/x/node"
        writer = subprocess.Popen(
            [sys.executable, "-m", "spiffe_server.cli", "entry", "create", "--data", "-", "--output", "json",
             "--socket-path", str(srv.socket_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert writer.stdin is not None
        writer.stdin.write(_batch(parent, 0, 5000))
        writer.stdin.close()
        deadline = time.monotonic() + 30
        while _sql(db, "SELECT COUNT(*) FROM entries") == [(0,)] and time.monotonic() < deadline:
            time.sleep(0.005)
        _kill9(srv)  # mid write: some batches committed, the rest not
        writer.wait(60)
        written = int(str(_sql(db, "SELECT COUNT(*) FROM entries")[0][0]))
        print(f"{written} of 5000 entries committed before the kill")
        assert 0 < written < 5000  # the kill landed mid-write (the CLI sends the batch 1,000 entries per call)
        _assert_db_ok(db)
        srv.launch()
        _assert_intact(srv, db)
        # every stored entry is whole (its selectors rows are there) and the change log names it
        assert _sql(db, "SELECT COUNT(*) FROM entries e WHERE NOT EXISTS"
                        " (SELECT 1 FROM entry_selectors s WHERE s.entry_id = e.id)") == [(0,)]
        assert _sql(db, "SELECT COUNT(DISTINCT key) FROM changes WHERE kind = 'entry'")[0][0] == written
        # writing the same batch again stores exactly what was missing
        out = json.loads(srv.cli("entry", "create", "--data", "-", "--output", "json", stdin=_batch(parent, 0, 5000),
                                 check=False).stdout)
        codes = [r["status"]["code"] for r in out["results"]]
        assert codes.count(0) == 5000 - written
        assert _sql(db, "SELECT COUNT(*) FROM entries") == [(5000,)]


@contextlib.contextmanager
def _small_tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with filler.open("wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (256 * 1024))
            f.flush()
    return filler


def test_sqlite_on_a_full_filesystem_fails_writes_cleanly_keeps_reads_and_recovers(tmp_path: Path) -> None:
    with _small_tmpfs(Path(f"/tmp/ss-full-{os.getpid()}"), 24) as mnt:
        data = mnt / "d"
        with ServerProc.start(data_dir=data, socket_path=tmp_path / "api.sock") as srv:
            db = data / "datastore.sqlite3"
            first = srv.cli_json("entry", "create", "--spiffe-id", f"{TD}/before", "--parent-id", f"{TD}/node",
                                 "--selector", "unix:uid:1")["id"]
            filler = _fill(mnt)
            failed = srv.cli("entry", "create", "--data", "-", check=False, stdin=_batch(f"{TD}/node", 0, 2000))
            single = srv.cli("entry", "create", "--spiffe-id", f"{TD}/during", "--parent-id", f"{TD}/node",
                             "--selector", "unix:uid:2", check=False)
            assert single.returncode != 0 and "internal error" in single.stderr, single.stderr
            assert failed.returncode != 0 or "internal error" in failed.stdout + failed.stderr
            assert first in srv.cli("entry", "show", "--entry-id", first).stdout  # reads keep working
            srv.cli("healthcheck")
            filler.unlink()  # space returns
            srv.cli("entry", "create", "--spiffe-id", f"{TD}/after", "--parent-id", f"{TD}/node",
                    "--selector", "unix:uid:3")
            _assert_intact(srv, db)
            names = {r[0] for r in _sql(db, "SELECT spiffe_id FROM entries")}
            assert {f"{TD}/before", f"{TD}/after"} <= names and f"{TD}/during" not in names
            srv.stop()  # unmounted below: nothing may hold the filesystem


def test_postgres_restart_during_sync_servers_recover_and_no_workload_fetch_fails(pg_schema: str) -> None:
    with ServerProc.start(extra_args=["--database", pg_schema]) as srv, \
            AgentProc.start(srv, "ag", ("--config", str(_agent_config(srv)))) as agent:
        agent.wait_ready()
        srv.cli("entry", "create", "--spiffe-id", f"{TD}/mine", "--parent-id", agent.agent_id,
                "--selector", f"unix:uid:{UID}")
        with Fetcher(agent.socket_path) as fetcher:
            deadline = time.monotonic() + 30
            while fetcher.ok < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            restarted = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"],
                                       capture_output=True, text=True, check=False)
            assert restarted.returncode == 0, restarted.stderr
            # the server recovers by itself: a new entry written through it reaches the agent
            deadline = time.monotonic() + 60
            while srv.cli("entry", "create", "--spiffe-id", f"{TD}/after-restart", "--parent-id", agent.agent_id,
                          "--selector", f"unix:uid:{UID}", "--selector", "unix:gid:0", check=False).returncode:
                assert time.monotonic() < deadline, srv.log_text()[-3000:]
                time.sleep(0.5)
            time.sleep(2)
        assert fetcher.failures == [], fetcher.failures[:5]
        assert fetcher.ok > 20
        assert "listening for changes of other servers" in srv.log_text().split("change listener lost")[-1]
