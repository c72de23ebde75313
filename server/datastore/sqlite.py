"""SQLite backend (stdlib ``sqlite3``): one WAL-mode connection guarded by a lock.

    store = open_sqlite(data_dir / "datastore.sqlite3")
    store.create_join_token(JoinToken(token=t, expires_at=exp))
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spiffe_server.datastore._store import SqlDataStore
from spiffe_server.datastore.errors import DataStoreError
from spiffe_server.datastore.models import MAX_REVOCATIONS
from spiffe_server.datastore.schema import SQLITE, UniqueViolation

DEFAULT_FILENAME = "datastore.sqlite3"
_BUSY_TIMEOUT_S = 30.0


class _SqliteTx:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            self._cursor.execute(SQLITE.render(sql), params)
            return self._cursor.fetchall()
        except sqlite3.IntegrityError as err:
            if "UNIQUE" in str(err):
                raise UniqueViolation("datastore: unique constraint violated") from err
            raise DataStoreError(f"datastore: sqlite integrity error ({err.sqlite_errorname})") from err
        except sqlite3.Error as err:
            raise DataStoreError(f"datastore: sqlite query failed ({err.sqlite_errorname})") from err


class SqliteBackend:
    """A database file opened in WAL mode; transactions are ``BEGIN IMMEDIATE`` under a lock."""

    dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # The file holds join-token hashes and the CA journal: create it owner-only before SQLite does.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as err:
            raise DataStoreError(f"datastore: cannot open sqlite database {str(self.path)!r}") from err
        self._lock = threading.Lock()

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        """A write-locked transaction, committed on normal exit."""
        with self._lock:
            cursor = self._conn.cursor()
            tx = _SqliteTx(cursor)
            tx.execute("BEGIN IMMEDIATE")
            try:
                yield tx
                tx.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.rollback()
                raise

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


def open_sqlite(path: str | os.PathLike[str], *, max_revocations: int = MAX_REVOCATIONS) -> SqlDataStore:
    """Open (creating and migrating) the datastore in a file, or in ``DEFAULT_FILENAME`` inside a directory."""
    target = Path(path)
    if target.is_dir():
        target = target / DEFAULT_FILENAME
    backend = SqliteBackend(target)
    try:
        return SqlDataStore(backend, max_revocations=max_revocations)
    except BaseException:
        backend.close()
        raise
