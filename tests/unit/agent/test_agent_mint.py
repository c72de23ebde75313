"""The mint loop's CSR batches: a bounded number at the server at once, stored in order; a failure ends the round."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from spiffe_agent.manager import mint
from spiffe_agent.manager.cache import Entry, SyncUpdate, WorkloadCache
from spiffe_agent.manager.client import ServerCallError
from spiffe_agent.manager.mint import MINT_IN_FLIGHT, Minter
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.clock import ManualClock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from tests.support.ca import CA

TD = TrustDomain.parse("example.org")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 2
ENTRIES = tuple(
    Entry(id=f"e{i}", spiffe_id=SpiffeId.parse(f"spiffe://example.org/w{i}"), selectors=frozenset({Selector("u", "1")}))
    for i in range(5 * BATCH)
)


class _CsrKey:
    """What the test CA needs of a key to issue a leaf for a CSR: its public key."""

    def __init__(self, csr: x509.CertificateSigningRequest) -> None:
        self._csr = csr

    def public_key(self) -> Any:
        return self._csr.public_key()


class SigningServer:
    """Stands in for the ServerPool: each BatchNewX509SVID call takes a while, then a test CA signs its CSRs."""

    def __init__(self, *, fail_call: int = -1) -> None:
        self._ca = CA.create("example.org", now=NOW).child_ca()
        self._fail_call = fail_call
        self.calls: list[list[str]] = []  # entry ids of each call, in the order sent
        self.open = self.most_open = 0
        self.cancelled = 0

    async def call(self, func: Callable[[SigningServer], Awaitable[Any]]) -> Any:
        return await func(self)

    async def batch_new_x509(self, params: list[agent_pb2.NewX509SVIDParams]) -> list[agent_pb2.X509SVIDResult]:
        number = len(self.calls)
        self.calls.append([p.entry_id for p in params])
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            if number == self._fail_call:
                raise ServerCallError("server gone")
            await asyncio.sleep(0.05)  # long enough for the agent to build and send the next batch
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.open -= 1
        return [self._sign(p) for p in params]

    def _sign(self, p: agent_pb2.NewX509SVIDParams) -> agent_pb2.X509SVIDResult:
        csr = x509.load_der_x509_csr(p.csr)
        uri = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        spiffe_id = uri.get_values_for_type(x509.UniformResourceIdentifier)[0]
        issued = self._ca.issue_svid(spiffe_id, key=cast(Any, _CsrKey(csr)))
        chain = [c.public_bytes(Encoding.DER) for c in issued.chain]
        return agent_pb2.X509SVIDResult(entry_id=p.entry_id, cert_chain=chain)


def _minter(server: SigningServer, stored: list[int]) -> tuple[Minter, WorkloadCache]:
    cache = WorkloadCache(max_x509_svids=len(ENTRIES))
    cache.apply_sync([SyncUpdate(full=True, entries=ENTRIES, bundle=SpiffeBundle(TD))])
    minter = Minter(
        cache,
        cast(Any, server),
        cast(Any, None),
        kick=asyncio.Event(),
        clock=ManualClock(NOW),
        rng=random.Random(0),
        rotation_tick=60.0,
        interests=list,
        on_change=lambda: stored.append(cache.svid_count()),
    )
    return minter, cache


async def test_batches_overlap_at_the_server_within_the_bound_and_are_stored_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mint, "CSR_BATCH", BATCH)
    server, stored = SigningServer(), []
    minter, cache = _minter(server, stored)
    await minter._mint([(e, None) for e in ENTRIES])
    assert server.calls == [[e.id for e in ENTRIES[i : i + BATCH]] for i in range(0, len(ENTRIES), BATCH)]
    assert server.most_open == MINT_IN_FLIGHT == 2  # the next batch went out while one was being signed
    assert stored == [2, 4, 6, 8, 10]  # one batch at a time, in the order sent
    assert [(s.entry_id, s.spiffe_id) for s in cache.cached_svids()] == [(e.id, e.spiffe_id) for e in ENTRIES]


async def test_a_failed_call_ends_the_round_and_cancels_the_batches_still_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mint, "CSR_BATCH", BATCH)
    server, stored = SigningServer(fail_call=1), []
    minter, cache = _minter(server, stored)
    with pytest.raises(ServerCallError, match="server gone"):
        await minter._mint([(e, None) for e in ENTRIES])
    assert len(server.calls) == 3 and server.cancelled == 1  # the third was at the server when the second failed
    assert stored == [2] and [s.entry_id for s in cache.cached_svids()] == ["e0", "e1"]
    assert server.open == 0
