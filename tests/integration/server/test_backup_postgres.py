"""The PostgreSQL backup procedure of docs/operations.md, run for real: pg_dump of the server's
schema, ``spiffe-server backup`` of its keys, the schema dropped, pg_restore, ``restore`` of the
keys into a new data dir; the datastore, the CA journal and the keys come back identical."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from spiffe_server.datastore import open_datastore
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (apt-get install postgresql-client)")
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([sys.executable, "-m", "spiffe_server.cli", *args], capture_output=True, text=True,
                         timeout=60, check=False)
    assert res.returncode == 0, res.stderr
    return res


def _snapshot(url: str) -> tuple[list[str], dict[int, bytes]]:
    store = open_datastore(url)
    try:
        from spiffe_server.datastore import Page

        entries = sorted(e.spiffe_id for e in store.list_entries(None, Page(size=1000)).items)
        return entries, store.list_journals()  # each server's CA journal, by ID
    finally:
        store.close()


def test_pg_dump_and_key_backup_restore_the_server(pg_schema: str, tmp_path: Path) -> None:
    pg_dump, pg_restore = _tool("pg_dump"), _tool("pg_restore")
    schema = parse_qs(urlsplit(pg_schema).query)["options"][0].removeprefix("-csearch_path=")
    with ServerProc.start(extra_args=["--database", pg_schema]) as srv:
        for name in ("web", "db"):
            srv.cli("entry", "create", "--spiffe-id", f"{TD}/{name}", "--parent-id", f"{TD}/node",
                    "--selector", "unix:uid:1000")
        before = _snapshot(pg_schema)
        keys_before = {p.name: p.read_bytes() for p in (srv.data_dir / "keys").iterdir()}
        journal_id = (srv.data_dir / "ca-journal-id").read_text()
        dump = tmp_path / "db.dump"
        subprocess.run([pg_dump, "--format=custom", f"--schema={schema}", f"--file={dump}", pg_schema],
                       check=True, timeout=120, capture_output=True)
        archive = tmp_path / "keys.tar.gz"
        out = _cli("backup", "--data-dir", str(srv.data_dir), "--database", pg_schema, "--out", str(archive))
        assert "back it up with pg_dump" in out.stderr
    assert before[0] == [f"{TD}/db", f"{TD}/web"] and before[1]

    with psycopg.connect(pg_schema, autocommit=True) as conn:
        conn.execute(f"drop schema {schema} cascade")
    subprocess.run([pg_restore, "--no-owner", f"--dbname={pg_schema}", str(dump)], check=True, timeout=120,
                   capture_output=True)
    target = tmp_path / "restored"
    _cli("restore", "--data-dir", str(target), "--database", pg_schema, "--from", str(archive))
    assert _snapshot(pg_schema) == before
    assert {p.name: p.read_bytes() for p in (target / "keys").iterdir()} == keys_before
    # the restored data dir names the same CA journal, so a server started on it uses the restored keys
    assert (target / "ca-journal-id").read_text() == journal_id
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (target / "keys").iterdir())
