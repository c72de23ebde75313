"""PostgreSQL backend (psycopg 3, sync) with a small bounded connection pool.

Several servers may share one database; writers serialise on counter rows, and join
tokens are consumed with ``DELETE ... RETURNING``::

    store = open_postgres("postgresql://spiffe@db.internal:5432/spiffe")
    store.consume(token, now=clock.now())
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from spiffe_server.datastore._store import SqlDataStore
from spiffe_server.datastore.errors import DataStoreError
from spiffe_server.datastore.models import MAX_REVOCATIONS
from spiffe_server.datastore.schema import POSTGRES, UniqueViolation

DEFAULT_POOL_SIZE = 4
_CONNECT_TIMEOUT_S = 10


class _PgTx:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        try:
            self._cursor.execute(POSTGRES.render(sql), list(params))
        except psycopg.errors.UniqueViolation as err:
            raise UniqueViolation("datastore: unique constraint violated") from err
        except psycopg.Error as err:
            # SQLSTATE only: the server's message may quote row values.
            raise DataStoreError(f"datastore: postgresql query failed (sqlstate {err.sqlstate})") from err
        return list(self._cursor.fetchall()) if self._cursor.description is not None else []


class PostgresBackend:
    """Up to ``pool_size`` connections, opened on demand and reused."""

    dialect = POSTGRES

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        if pool_size < 1:
            raise ValueError("postgres: pool_size must be at least 1")
        self._url = url
        self._slots = threading.BoundedSemaphore(pool_size)
        self._idle: queue.LifoQueue[Any] = queue.LifoQueue()
        self._closed = False
        self._idle.put(self._connect())  # fail fast on a bad URL or an unreachable server

    def _connect(self) -> Any:
        try:
            return psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        except psycopg.Error as err:
            # The URL may carry a password: never echo it.
            raise DataStoreError("datastore: cannot connect to postgresql") from err

    def _checkout(self) -> Any:
        if self._closed:
            raise DataStoreError("datastore: store is closed")
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return self._connect()

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        """A transaction on a pooled connection, committed on normal exit."""
        with self._slots:
            conn = self._checkout()
            try:
                with conn.transaction(), conn.cursor() as cursor:
                    yield _PgTx(cursor)
            except psycopg.Error as err:
                raise DataStoreError(f"datastore: postgresql transaction failed (sqlstate {err.sqlstate})") from err
            finally:
                self._release(conn)

    def _release(self, conn: Any) -> None:
        if self._closed or conn.closed or conn.broken:
            conn.close()
        else:
            self._idle.put(conn)

    def close(self) -> None:
        """Close idle connections; busy ones close when released."""
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def open_postgres(url: str, *, pool_size: int = DEFAULT_POOL_SIZE,
                  max_revocations: int = MAX_REVOCATIONS) -> SqlDataStore:
    """Connect to ``postgresql://...`` and migrate; the schema follows the URL's ``search_path``."""
    backend = PostgresBackend(url, pool_size=pool_size)
    try:
        return SqlDataStore(backend, max_revocations=max_revocations)
    except BaseException:
        backend.close()
        raise
