"""The revocation watch beside the Workload API: revoked serials and jtis, pushed as the agent learns them.

A relying workload (the credential broker) must refuse a revoked caller within a second, not at
expiry. The agent already holds what the server revoked (revocations, quarantines, exited
``--bind-to-process`` tasks) and what it revoked itself; this read-only service streams it::

    services.append(RevocationWatchService(manager))
    # client: spiffe_py.workloadapi.watch_revocations(address)

Nothing here is secret (serials and token ids are not credentials), so like the health service
it does not attest the caller. The first update carries the full set (``full`` on its first
chunk, ``more`` on all but its last), later ones only additions, or the full set again when
something left it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_agent.errors import NotReadyError
from spiffe_agent.manager.cache import RevocationState
from spiffe_py._proto.spiffepy.agent.v1 import revocations_pb2
from spiffe_py._proto.spiffepy.agent.v1.revocations_grpc import RevocationWatchBase

MAX_VALUES_PER_MESSAGE = 4096  # serials + jtis per message, so a large set never nears a message size limit


class RevocationWatcher(Protocol):
    """One watcher's subscription to the revocation state."""

    async def next(self) -> RevocationState:
        """Wait for a possible change; the current state."""
        ...


class RevocationSource(Protocol):
    """What the service needs from the manager."""

    def watch_revocations(self) -> AbstractAsyncContextManager[RevocationWatcher]:
        """A subscription to the revocation state."""
        ...


def _chunks(serials: list[str], jtis: list[str]) -> Iterator[tuple[list[str], list[str]]]:
    while serials or jtis:
        take_s = serials[:MAX_VALUES_PER_MESSAGE]
        take_j = jtis[: MAX_VALUES_PER_MESSAGE - len(take_s)]
        serials, jtis = serials[len(take_s):], jtis[len(take_j):]
        yield take_s, take_j


def revocation_messages(held: RevocationState | None, now: RevocationState) -> list[revocations_pb2.RevocationSet]:
    """Messages that bring a client holding ``held`` to ``now`` (none when nothing changed); pure."""
    if held == now:
        return []
    tainted = {"tainted_x509_authorities": sorted(now.tainted_x509_authorities),
               "tainted_jwt_keys": sorted(now.tainted_jwt_keys)}
    full = held is None or not (held.x509_serials <= now.x509_serials and held.jwt_ids <= now.jwt_ids)
    if full:
        serials, jtis = sorted(now.x509_serials), sorted(now.jwt_ids)
    else:
        assert held is not None
        serials, jtis = sorted(now.x509_serials - held.x509_serials), sorted(now.jwt_ids - held.jwt_ids)
    chunks = list(_chunks(serials, jtis)) or [([], [])]
    return [revocations_pb2.RevocationSet(full=full and i == 0, x509_serials=s, jwt_ids=j, more=i < len(chunks) - 1,
                                          **tainted) for i, (s, j) in enumerate(chunks)]


class RevocationWatchService(RevocationWatchBase):
    """``spiffepy.agent.v1.RevocationWatch``: the agent's revocation state, then every change."""

    def __init__(self, source: RevocationSource) -> None:
        self._source = source

    async def WatchRevocations(self, stream: Any) -> None:
        """Stream the revocation state: full first, then changes."""
        await stream.recv_message()
        held: RevocationState | None = None
        async with self._source.watch_revocations() as watcher:
            while True:
                try:
                    now = await watcher.next()
                except NotReadyError as err:
                    raise GRPCError(Status.UNAVAILABLE, str(err)) from err
                for message in revocation_messages(held, now):
                    await stream.send_message(message)
                held = now
