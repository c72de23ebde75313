"""The real PostgreSQL used by datastore tests.

Usage::

    url = postgres_url()          # env SPIFFE_PY_TEST_POSTGRES_URL or the CI default
    check_reachable(url)          # raises PostgresUnavailable with the reason

Tests create and drop their own schemas; this module only checks the server answers.
"""

from __future__ import annotations

import os

import psycopg
from psycopg.conninfo import conninfo_to_dict

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
URL_ENV = "SPIFFE_PY_TEST_POSTGRES_URL"
CONNECT_TIMEOUT_S = 5


class PostgresUnavailable(Exception):
    """PostgreSQL did not answer; str() is the reason."""


def postgres_url() -> str:
    """The URL tests connect to."""
    return os.environ.get(URL_ENV, DEFAULT_URL)


def check_reachable(url: str) -> None:
    """Connect and run `select 1`.

    Raises:
        PostgresUnavailable: the server is down, refuses the login, or answers wrongly.
    """
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            row = conn.execute("select 1").fetchone()
    except psycopg.Error as err:
        raise PostgresUnavailable(f"postgres at {_where(url)}: {err}".strip()) from err
    if row != (1,):
        raise PostgresUnavailable(f"postgres at {_where(url)}: unexpected reply {row!r}")


def _where(url: str) -> str:
    """host:port/dbname of a URL, leaving out any password it might carry."""
    info = conninfo_to_dict(url)
    return f"{info.get('host', '')}:{info.get('port', '5432')}/{info.get('dbname', '')}"
