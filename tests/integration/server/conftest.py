"""Fixtures for spiffe-server integration tests: a real server process per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.server_proc import ServerProc


@pytest.fixture
def server() -> Iterator[ServerProc]:
    """A running spiffe-server for trust domain example.org with default settings."""
    with ServerProc.start() as srv:
        yield srv
