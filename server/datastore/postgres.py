"""PostgreSQL backend (psycopg 3, sync) with a small bounded connection pool.

Several servers may share one database; writers serialise on counter rows, and join
tokens are consumed with ``DELETE ... RETURNING``::

    store = open_postgres("postgresql://spiffe@db.internal:5432/spiffe")
    store.consume(token, now=clock.now())
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from spiffe_server.datastore._store import CHANGE_CHANNEL, SqlDataStore
from spiffe_server.datastore.errors import DataStoreError
from spiffe_server.datastore.models import MAX_REVOCATIONS
from spiffe_server.datastore.schema import POSTGRES, UniqueViolation

log = logging.getLogger("spiffe_server.datastore")

DEFAULT_POOL_SIZE = 4
_CONNECT_TIMEOUT_S = 10
# Every transaction that records changes ends with pg_notify(CHANGE_CHANNEL, current_schema()):
# servers sharing the database LISTEN on it (the payload tells schemas sharing one database apart).
_LISTEN_WAIT_S = 1.0  # how often the listener looks up from its socket to see whether it must stop
_LISTEN_RETRY_S = (0.2, 5.0)  # reconnect backoff after a lost listener connection: first, cap


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
        # rownumber is None when the statement returned no rows to fetch (description would build its columns)
        return list(self._cursor.fetchall()) if self._cursor.rownumber is not None else []


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
        # backend PIDs of the pool's connections: the listener skips our own notifications (the
        # store reports its own commits directly), so a local change is read once, not twice
        self._own_pids: dict[int, int] = {}  # id(connection) -> its backend PID, read when it was opened
        self._idle.put(self._connect())  # fail fast on a bad URL or an unreachable server

    def _connect(self) -> Any:
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S)
        except psycopg.Error as err:
            # The URL may carry a password: never echo it.
            raise DataStoreError("datastore: cannot connect to postgresql") from err
        self._own_pids[id(conn)] = conn.info.backend_pid
        return conn

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
            self._own_pids.pop(id(conn), None)
            conn.close()
        else:
            self._idle.put(conn)

    def listen(self, on_change: Callable[[], None]) -> Callable[[], None]:
        """Call ``on_change()`` (on a thread of its own) whenever any server commits a change; returns a stopper.

        One dedicated connection LISTENs on :data:`CHANGE_CHANNEL`. After every (re)connect it
        also calls ``on_change()`` once, since notifications sent while it was away are lost
        (a PostgreSQL restart): the caller re-reads the change log, so nothing is missed.
        """
        stop = threading.Event()
        thread = threading.Thread(target=self._listen_loop, args=(on_change, stop), name="pg-listen", daemon=True)
        thread.start()

        def stopper() -> None:
            stop.set()
            thread.join(_LISTEN_WAIT_S * 3)
        return stopper

    def _listen_loop(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        delay = _LISTEN_RETRY_S[0]
        while not stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S) as conn:
                    row = conn.execute("SELECT current_schema()").fetchone()
                    schema = str(row[0]) if row else ""
                    conn.execute(f"LISTEN {CHANGE_CHANNEL}")
                    log.info("listening for changes of other servers", extra={"channel": CHANGE_CHANNEL})
                    delay = _LISTEN_RETRY_S[0]
                    on_change()
                    while not stop.is_set():
                        # any() returns at the first foreign notification (notifies() yields as they come)
                        if any(n.payload == schema and n.pid not in frozenset(self._own_pids.values())
                               for n in conn.notifies(timeout=_LISTEN_WAIT_S)):
                            on_change()
            except psycopg.Error as err:
                # SQLSTATE only (the message may quote the URL); polling covers the gap meanwhile
                log.warning("change listener lost its connection; reconnecting",
                            extra={"sqlstate": err.sqlstate or "", "retry_s": delay})
                stop.wait(delay)
                delay = min(delay * 2, _LISTEN_RETRY_S[1])

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
