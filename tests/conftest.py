"""Session-wide test infrastructure: external-part fixtures and the no-skip-in-CI rule.

Usage::

    def test_attest(docker_engine: DockerEngine) -> None:
        cid = docker_engine.run(["sleep", "60"], labels={"app": "web"})

    def test_store(postgres_url: str) -> None:
        with psycopg.connect(postgres_url) as conn: ...

Tests that use `docker_engine` / `postgres_url` are marked `docker` / `postgres` automatically,
so `pytest -m "not docker"` deselects them. With CI=true every skip becomes a failure.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import psycopg
import pytest

# The repo root is on sys.path through `pythonpath = ["."]` in pyproject.toml.
from tests.support import in_ci, unavailable
from tests.support.docker_engine import DockerEngine, EngineUnavailable
from tests.support.postgres import PostgresUnavailable, check_reachable
from tests.support.postgres import postgres_url as _configured_postgres_url

pytest_plugins = ["pytester"]

# fixture name -> marker added to every test that uses it
FIXTURE_MARKERS = {"docker_engine": "docker", "postgres_url": "postgres"}


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A running Docker engine with the `local/busybox:1` image; stopped at session end."""
    # Under /tmp, not pytest's basetemp: short socket paths, and removed (not kept) afterwards.
    with tempfile.TemporaryDirectory(prefix="spiffe-py-docker-", dir="/tmp", ignore_cleanup_errors=True) as work:
        try:
            engine = DockerEngine.start(Path(work))
        except EngineUnavailable as err:
            unavailable(f"docker engine: {err}")
        try:
            yield engine
        finally:
            engine.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the real PostgreSQL (db `test`); tests create their own schemas."""
    url = _configured_postgres_url()
    try:
        check_reachable(url)
    except PostgresUnavailable as err:
        unavailable(str(err))
    return url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A database URL whose search_path is a fresh schema in the test database, dropped afterwards."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"create schema {schema}")
    try:
        yield f"{postgres_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"drop schema {schema} cascade")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the external parts they use."""
    for item in items:
        for fixture, marker in FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Under CI a skipped test is a failed test: nothing may pass by not running."""
    report: pytest.TestReport = yield
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Under CI a module skipped at collection time is a collection error."""
    report: pytest.CollectReport = yield
    if in_ci() and report.skipped:
        _fail_skip(report)
    return report


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI=true, which forbids skips: {reason}"
