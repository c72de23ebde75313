"""Opening, reopening and migrating stores; URL handling; file permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from spiffe_server.datastore import (
    AuditRecord,
    BundleRecord,
    DataStore,
    DataStoreError,
    JoinToken,
    SchemaVersionError,
    SqlDataStore,
    open_datastore,
)
from spiffe_server.datastore.schema import MIGRATIONS, POSTGRES, SQLITE
from spiffe_server.datastore.sqlite import DEFAULT_FILENAME
from tests.datastore.conftest import StoreFactory
from tests.datastore.helpers import AGENT_ID, LATER, NOW, make_agent, make_entry


def test_everything_survives_close_and_reopen(backend: StoreFactory) -> None:
    store = backend.open()
    entry = store.create_entry(make_entry(labels={"k": "v"}))
    store.create_agent(make_agent())
    store.create_join_token(JoinToken(token="tok", expires_at=LATER, spiffe_id="spiffe://example.org/alias"))
    store.save_journal(b"journal")
    store.set_bundle(BundleRecord(trust_domain="example.org", data=b"{}", sequence=3))
    store.append_audit(AuditRecord(time=NOW, record="{}", prev_hash="", hash="h1"))
    backend.close_all()

    reopened = backend.open()
    assert reopened.get_entry(entry.id) == entry
    assert reopened.get_agent(AGENT_ID) == make_agent()
    assert reopened.consume("tok", now=NOW) == JoinToken(token="tok", expires_at=LATER,
                                                         spiffe_id="spiffe://example.org/alias")
    assert reopened.load_journal() == b"journal"
    assert reopened.get_bundle("example.org").sequence == 3
    assert [r.hash for r in reopened.iter_audit()] == ["h1"]
    assert reopened.change_seq() == 3  # entry, agent, bundle


def test_migrations_are_recorded_and_idempotent(backend: StoreFactory) -> None:
    first = backend.open()
    assert first.schema_version == len(MIGRATIONS)
    first.create_entry(make_entry())
    second = backend.open()  # migrating again (even while another store is open) changes nothing
    assert second.schema_version == len(MIGRATIONS)
    assert backend.raw("SELECT version FROM schema_version ORDER BY version") == [
        (v,) for v in range(1, len(MIGRATIONS) + 1)]
    assert second.count_entries() == 1


def test_newer_schema_is_refused(backend: StoreFactory) -> None:
    backend.open()
    backend.close_all()
    backend.raw("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS) + 1,))
    newer = f"version {len(MIGRATIONS) + 1} is newer than supported version {len(MIGRATIONS)}"
    with pytest.raises(SchemaVersionError, match=newer):
        backend.open()


def test_open_datastore_picks_backend_by_scheme(backend: StoreFactory) -> None:
    store: DataStore = open_datastore(backend.target)
    try:
        entry = store.create_entry(make_entry())
        assert backend.open().get_entry(entry.id) == entry
    finally:
        store.close()


def test_sqlite_file_is_owner_only_and_directory_gets_default_name(tmp_path: Path) -> None:
    store = open_datastore(tmp_path)
    store.close()
    path = tmp_path / DEFAULT_FILENAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sqlite_url_scheme(tmp_path: Path) -> None:
    store = open_datastore(f"sqlite://{tmp_path / 'x.db'}")
    assert isinstance(store, SqlDataStore)
    store.close()
    assert (tmp_path / "x.db").is_file()


def test_unreachable_postgres_fails_without_echoing_the_password() -> None:
    with pytest.raises(DataStoreError, match="cannot connect to postgresql") as info:
        open_datastore("postgresql://user:hunter2@127.0.0.1:1/db?connect_timeout=2")
    assert "hunter2" not in str(info.value)


def test_dialects_render_shared_sql() -> None:
    sql = "SELECT data FROM t WHERE a = ? AND b = ? -- {blob}"
    assert SQLITE.render(sql) == "SELECT data FROM t WHERE a = ? AND b = ? -- BLOB"
    assert POSTGRES.render(sql) == "SELECT data FROM t WHERE a = %s AND b = %s -- BYTEA"
    with pytest.raises(ValueError, match="must not contain '%'"):
        POSTGRES.render("SELECT 1 WHERE a LIKE 'x%'")
