"""The agent's server pool: one server at a time, the next on failure, backoff only after a whole round."""

from __future__ import annotations

import random

import pytest

from spiffe_agent.errors import NotReadyError
from spiffe_agent.manager.client import ServerCallError, ServerClient, server_ssl_context
from spiffe_agent.manager.servers import ServerPool
from spiffe_py.spiffeid import TrustDomain

TD = TrustDomain.parse("example.org")
A, B, C = ("10.0.0.1", 8081), ("10.0.0.2", 8081), ("[::1]", 9)


def _pool(*addresses: tuple[str, int]) -> ServerPool:
    pool = ServerPool(addresses, TD, rng=random.Random(7))
    pool.connect(server_ssl_context((), insecure=True))
    return pool


async def test_failure_moves_to_the_next_address_and_round_robins() -> None:
    pool = _pool(A, B, C)
    seen = [pool.client().address]
    for _ in range(3):
        pool.failed(pool.client())
        seen.append(pool.client().address)
    assert seen == [A, B, C, A]


async def test_a_replaced_client_failing_does_not_fail_over() -> None:
    """A stream broken because the agent renewed its SVID (new client, same server) is no server failure."""
    pool = _pool(A, B)
    stale = pool.client()
    pool.connect(server_ssl_context((), insecure=True))  # what a renewal does
    assert pool.failed(stale) == 0.0
    assert pool.current == A and pool.client() is not stale


async def test_backoff_grows_per_failed_round_and_resets_on_success() -> None:
    pool = _pool(A, B)
    delays = [pool.failed(pool.client()) for _ in range(6)]
    # 0.25 s ±50 % while the other server is untried, doubling with each round where all failed
    for i, delay in enumerate(delays):
        base = 0.25 * 2 ** (i // 2)
        assert base * 0.5 <= delay <= base * 1.5, (i, delays)
    assert pool.succeeded() is True
    assert pool.failed(pool.client()) <= 0.375


async def test_call_retries_once_on_the_next_server_when_unreachable() -> None:
    pool = _pool(A, B)
    asked: list[tuple[str, int]] = []

    async def renew(client: ServerClient) -> str:
        asked.append(client.address)
        if client.address == A:
            raise ServerCallError("client: server unreachable: ConnectionRefusedError")
        return "renewed"

    assert await pool.call(renew) == "renewed"
    assert asked == [A, B] and pool.current == B


async def test_call_does_not_fail_over_on_a_refusal_or_with_one_server() -> None:
    async def refused(client: ServerClient) -> str:
        raise ServerCallError("client: server refused the call", "PERMISSION_DENIED")

    async def down(client: ServerClient) -> str:
        raise ServerCallError("client: server unreachable")

    pool = _pool(A, B)
    with pytest.raises(ServerCallError, match="refused"):
        await pool.call(refused)
    assert pool.current == A
    single = _pool(A)
    with pytest.raises(ServerCallError, match="unreachable"):
        await single.call(down)


async def test_no_client_before_the_agent_has_credentials() -> None:
    pool = ServerPool([A], TD, rng=random.Random())
    with pytest.raises(NotReadyError):
        pool.client()
    with pytest.raises(ValueError, match="at least one"):
        ServerPool([], TD, rng=random.Random())
