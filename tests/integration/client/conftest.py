"""Fixtures for the workload library against a real fake Workload API on a Unix socket."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from spiffe_py.bundle import BundleSet, X509Bundle
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.x509svid import X509Svid
from tests.support.ca import CA, Issued
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


@dataclass
class StaticSource:
    """A fixed SVID and bundle set: the side of a TLS test that does not rotate."""

    svid: X509Svid
    bundles: BundleSet

    def get_x509_svid(self) -> X509Svid:
        return self.svid

    def get_x509_bundle_for_trust_domain(self, trust_domain: TrustDomain) -> X509Bundle:
        return self.bundles.get_x509_bundle_for_trust_domain(trust_domain)


def static_source(issued: Issued, ca: CA) -> StaticSource:
    """``issued`` as an X509Svid, trusting ``ca``'s root."""
    return StaticSource(X509Svid.parse(issued.chain_pem(), issued.key_pem()), BundleSet.of(ca.x509_bundle()))
