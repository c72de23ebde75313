"""Fixtures for the workload library against a real fake Workload API on a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.ca import CA
from tests.support.fake_workload_api import FakeWorkloadApi, x509_response

TD = "example.org"
WEB_ID = "spiffe://example.org/web"
WAIT_SECONDS = 20.0


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll ``predicate`` until it holds; fail the test with ``what`` otherwise (no timing asserted)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory: Unix socket paths are limited to ~107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="wl-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ca() -> CA:
    return CA.create(TD)


@pytest.fixture
def api(short_dir: Path, ca: CA) -> Iterator[FakeWorkloadApi]:
    """A started fake serving one X509-SVID for WEB_ID."""
    fake = FakeWorkloadApi(short_dir / "api.sock")
    fake.set_x509(x509_response([ca.issue_svid(WEB_ID)], ca))
    with fake:
        yield fake
