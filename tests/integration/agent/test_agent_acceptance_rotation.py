"""Issue 4 acceptance 4: with a 10 s SVID TTL, streaming clients hold a valid SVID for 60 s.

Two clients follow the agent at once: our ``WorkloadApiClient.watch_x509_context()`` in a thread, and
py-spiffe's ``X509Source``. Every ~0.5 s the test checks, for both, that the current SVID has not
expired and that it chains to the bundle the same client holds (X5-*, WA-06).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from spiffe_py.bundle import X509Bundle
from spiffe_py.spiffeid import TrustDomain
from spiffe_py.workloadapi import WorkloadApiClient, X509Context
from spiffe_py.x509svid import verify_x509_svid
from tests.integration.agent.conftest import TD, Env, running_env

pytestmark = pytest.mark.slow

TTL = timedelta(seconds=10)
RUN_FOR = 60.0
SAMPLE_EVERY = 0.5
ROTATING_ID = f"spiffe://{TD}/rotating"


@pytest.fixture(scope="module")
def ttl10_env() -> Iterator[Env]:
    with running_env(
        [("/rotating", f"unix:uid:{os.geteuid()}")], server_config=f'default_x509_svid_ttl = "{TTL.seconds}s"\n'
    ) as e:
        yield e


class Watcher:
    """Keeps the latest X509Context of a spiffe_py watch stream, read from a daemon thread."""

    def __init__(self, env: Env) -> None:
        self.latest: X509Context | None = None
        self.error: BaseException | None = None
        self._client = WorkloadApiClient(f"unix://{env.socket_path}")
        self._watch = self._client.watch_x509_context()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for context in self._watch:
                self.latest = context
        except BaseException as err:  # surfaced to the test thread, which asserts on it
            self.error = err

    def close(self) -> None:
        self._watch.cancel()
        self._client.close()
        self._thread.join(10)


def check_svid(chain: Sequence[x509.Certificate], authorities: Sequence[x509.Certificate], now: datetime) -> str:
    """Assert the leaf is unexpired and short-lived, verify the chain to the authorities; the leaf's serial."""
    leaf = chain[0]
    assert leaf.not_valid_after_utc > now, f"expired SVID held at {now.isoformat()}"
    assert leaf.not_valid_after_utc - now <= TTL + timedelta(seconds=1), "SVID longer-lived than the TTL"
    bundle = X509Bundle(TrustDomain.parse(TD), tuple(authorities))
    assert str(verify_x509_svid(chain, bundle, now=now)) == ROTATING_ID
    return hex(leaf.serial_number)


def wait_first(watcher: Watcher, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while watcher.latest is None and watcher.error is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert watcher.error is None, repr(watcher.error)
    assert watcher.latest is not None, "no first X509Context within the timeout"


def test_streaming_clients_always_hold_unexpired_svid_for_60s(ttl10_env: Env) -> None:
    """spiffe_py watch and py-spiffe X509Source: unexpired, verifiable SVIDs at every sample for 60 s (WA-06)."""
    from spiffe import X509Source

    watcher = Watcher(ttl10_env)
    source = X509Source(socket_path=f"unix://{ttl10_env.socket_path}", timeout_in_seconds=30)
    ours: set[str] = set()
    theirs: set[str] = set()
    try:
        wait_first(watcher, 30)
        end = time.monotonic() + RUN_FOR
        while time.monotonic() < end:
            now = datetime.now(UTC)
            context = watcher.latest
            assert context is not None and watcher.error is None, repr(watcher.error)
            svid = context.default_svid
            authorities = context.bundles.get_x509_bundle_for_trust_domain(svid.spiffe_id.trust_domain).authorities
            ours.add(check_svid(svid.cert_chain, authorities, now))
            assert not source.is_closed()
            their_context = source.get_x509_context()  # SVID and bundle from one update
            theirs_svid = their_context.default_svid
            their_bundle = their_context.x509_bundle_set.get_bundle_for_trust_domain(theirs_svid.spiffe_id.trust_domain)
            assert their_bundle is not None
            their_authorities = sorted(their_bundle.x509_authorities, key=lambda c: c.serial_number)
            theirs.add(check_svid(theirs_svid.cert_chain, their_authorities, now))
            time.sleep(SAMPLE_EVERY)
    finally:
        source.close()
        watcher.close()
    # 60 s of 10 s SVIDs cannot be covered by fewer than 6 distinct certificates: rotation happened.
    assert len(ours) >= RUN_FOR / TTL.seconds
    assert len(theirs) >= RUN_FOR / TTL.seconds

