"""The servers an agent may use, the one it uses now, and failover between them (I/O shell).

The agent talks to one server at a time. When a call or the sync stream to it fails, the next
address becomes current; the wait before using it grows (jittered, exponential) only once a
whole round of addresses has failed, so a second server is tried almost at once::

    servers = ServerPool([("10.0.0.1", 8081), ("10.0.0.2", 8081)], td, rng=random.Random())
    servers.connect(ctx)                  # client for the current address, with the agent's credentials
    count = await servers.call(lambda c: c.revoke_own(serials, jtis, reason))   # once more on the next on failure
    delay = servers.failed(client)        # that client's server failed: the next one is current
"""

from __future__ import annotations

import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from spiffe_agent.errors import NotReadyError
from spiffe_agent.manager.client import ServerCallError, ServerClient
from spiffe_py._backoff import Backoff
from spiffe_py.spiffeid import TrustDomain

log = logging.getLogger(__name__)

T = TypeVar("T")

# the first retry after a failure waits about FAILOVER_DELAY (±50 %); each full failed round doubles it
FAILOVER_DELAY = 0.25
MAX_BACKOFF = 30.0
FAILOVER_BACKOFF = Backoff(initial=FAILOVER_DELAY, maximum=MAX_BACKOFF, jitter=0.5)
FAILOVER_STATUSES = frozenset({"UNAVAILABLE"})  # transport errors are reported as UNAVAILABLE


def display_address(address: tuple[str, int]) -> str:
    """``host:port`` (``[v6]:port``) for logs."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerPool:
    """Server addresses in order of preference, the current one and its client."""

    def __init__(self, addresses: Sequence[tuple[str, int]], trust_domain: TrustDomain, *,
                 rng: random.Random, backoff: Backoff = FAILOVER_BACKOFF) -> None:
        if not addresses:
            raise ValueError("servers: at least one server address is required")
        self._addresses = tuple(addresses)
        self._trust_domain = trust_domain
        self._rng = rng
        self._backoff = backoff
        self._index = 0
        self._failures = 0  # consecutive failures since the last success
        self._ctx: ssl.SSLContext | None = None
        self._client: ServerClient | None = None

    @property
    def current(self) -> tuple[str, int]:
        """The address in use."""
        return self._addresses[self._index]

    def client(self) -> ServerClient:
        """The client of the current server; NotReadyError before the agent has credentials."""
        if self._client is None:
            raise NotReadyError("agent: not attested yet")
        return self._client

    def open(self, ctx: ssl.SSLContext) -> ServerClient:
        """A one-off client of the current server (node attestation); the caller closes it."""
        host, port = self.current
        return ServerClient(host, port, self._trust_domain, ctx)

    def connect(self, ctx: ssl.SSLContext) -> None:
        """Use ``ctx`` (the agent's credentials and trust anchors) from now on, on the current server.

        The old client is closed, which breaks an open sync stream so it reconnects with ``ctx``.
        """
        self._ctx = ctx
        self._replace()

    def _replace(self) -> None:
        if self._ctx is None:
            return
        old, self._client = self._client, self.open(self._ctx)
        if old is not None:
            old.close()

    def replaced(self, client: ServerClient) -> bool:
        """True when ``client`` is no longer the pool's: it was closed on purpose (renewal, new trust, failover)."""
        return client is not self._client

    def succeeded(self) -> bool:
        """The current server answered; True when that ends a run of failures."""
        recovered, self._failures = self._failures > 0, 0
        return recovered

    def failed(self, client: ServerClient | None = None) -> float:
        """The current server failed (``client``: the client that failed, None for a one-off one).

        The next address becomes current, and its client replaces the failed one. Returns the
        seconds to wait before using it. A ``client`` already replaced (the agent renewed, or
        another task failed over first) changes nothing and needs no wait.
        """
        if client is not None and client is not self._client:
            return 0.0
        self._failures += 1
        self._index = (self._index + 1) % len(self._addresses)
        self._replace()
        round_ = (self._failures - 1) // len(self._addresses)
        return self._backoff.delay(round_, self._rng.random())

    async def call(self, func: Callable[[ServerClient], Awaitable[T]]) -> T:
        """``func`` on the current server; when it is unreachable, once more on the next one.

        A call cut off because its connection was replaced on purpose (the agent renewed its SVID)
        is retried once on the new connection, quietly: the server did not fail.
        """
        client = self.client()
        try:
            result = await func(client)
        except ServerCallError as err:
            if err.status in FAILOVER_STATUSES and self.replaced(client):
                log.debug("server call retried on the new connection to %s: %s", display_address(self.current), err)
                result = await func(self.client())
                self.succeeded()
                return result
            if err.status not in FAILOVER_STATUSES or len(self._addresses) == 1:
                raise
            self.failed(client)
            log.warning("server unreachable, failing over to %s: %s", display_address(self.current), err)
            result = await func(self.client())
        self.succeeded()
        return result

    def close(self) -> None:
        """Close the current client."""
        if self._client is not None:
            self._client.close()
            self._client = None
