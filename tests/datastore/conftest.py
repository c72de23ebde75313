"""Fixtures running every datastore test on both backends, each on a fresh database.

    def test_x(store: SqlDataStore) -> None: ...              # fresh SQLite file / fresh PG schema
    def test_y(backend: StoreFactory) -> None:
        a, b = backend.open(), backend.open()                   # two "servers" on one database
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from spiffe_server.datastore import SqlDataStore
from spiffe_server.datastore.postgres import open_postgres
from spiffe_server.datastore.sqlite import open_sqlite
from tests.support import unavailable
from tests.support.postgres import PostgresUnavailable, check_reachable, postgres_url


@dataclass
class StoreFactory:
    """Opens stores on one database and runs raw SQL on it (to inspect or tamper)."""

    kind: str
    target: str
    opened: list[SqlDataStore] = field(default_factory=list)

    def open(self, **options: Any) -> SqlDataStore:
        """A new store on this database."""
        opener = open_sqlite if self.kind == "sqlite" else open_postgres
        store = opener(self.target, **options)
        self.opened.append(store)
        return store

    def raw(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement outside the store (``?`` placeholders) and return its rows."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.target) as conn:
                return conn.execute(sql, params).fetchall()
        with psycopg.connect(self.target, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description is not None else []

    def close_all(self) -> None:
        """Close every store opened here."""
        for store in self.opened:
            store.close()
        self.opened.clear()


def _with_search_path(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A fresh SQLite file, or a fresh schema in the real PostgreSQL (dropped afterwards)."""
    if request.param == "sqlite":
        factory = StoreFactory("sqlite", str(tmp_path / "store.sqlite3"))
        yield factory
        factory.close_all()
        return
    url = postgres_url()
    try:
        check_reachable(url)
    except PostgresUnavailable as err:
        unavailable(str(err))
    schema = f"t_{secrets.token_hex(8)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    factory = StoreFactory("postgres", _with_search_path(url, schema))
    try:
        yield factory
    finally:
        factory.close_all()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def store(backend: StoreFactory) -> SqlDataStore:
    """A freshly migrated store on ``backend``."""
    return backend.open()
