"""What every API service shares: config, datastore, CA, clock and the change notifier.

::

    ctx = ServerContext(config=cfg, store=store, ca=ca, clock=SystemClock())
    ctx.changes.notify()                       # the entry feed reads the change log, wakes affected streams
    entries = await ctx.call(ctx.store.get_entry, entry_id)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, Protocol, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from spiffe_py._memo import Identity, Memo
from spiffe_py.clock import Clock
from spiffe_py.spiffeid import SpiffeId
from spiffe_server.api.entryfeed import ChangeNotifier, EntryFeed
from spiffe_server.api.revocation_hub import RevocationHub
from spiffe_server.api.syncs import SyncTracker
from spiffe_server.ca.manager import CaManager
from spiffe_server.ca.pool import InlineSigner, Signer
from spiffe_server.ca.signer import SignedSvid
from spiffe_server.config import ServerConfig
from spiffe_server.datastore import DataStore
from spiffe_server.guard import Guard
from spiffe_server.nodeattest.base import NodeAttestor
from spiffe_server.ratelimit import KeyedLimiter

T = TypeVar("T")


class ConsoleLogins(Protocol):
    """The web console's one-time login links (server/console/auth.py)."""

    def issue(self, user: str, *, readonly: bool) -> tuple[str, datetime]:
        """A new one-time login URL for ``user`` and when it stops working."""
        ...


@dataclass
class ServerContext:
    """The composition root's objects, handed to each service."""

    config: ServerConfig
    store: DataStore
    ca: CaManager
    clock: Clock
    attestors: Mapping[str, NodeAttestor] = field(default_factory=dict)
    changes: ChangeNotifier = field(default_factory=ChangeNotifier)
    revocations: RevocationHub = field(default_factory=RevocationHub)  # revocations + CRLs
    signer: Signer = field(default_factory=InlineSigner)  # X.509-SVID batches (server.ca.pool)
    console_logins: ConsoleLogins | None = None  # set when the web console runs
    syncs: SyncTracker = field(default_factory=SyncTracker)  # each agent's last sync with this server
    _chain_der: Memo[Identity, tuple[bytes, ...]] = field(default_factory=lambda: Memo(max_size=8), init=False,
                                                          repr=False, compare=False)

    @cached_property
    def guard(self) -> Guard:
        """Policy and audit on every mint; built on first use, see server/guard.py."""
        return Guard.from_config(self.config, self.store, self.clock)

    @cached_property
    def entries(self) -> EntryFeed:
        """The in-memory entry index, kept current from the datastore change log."""
        return EntryFeed(self.store, self.changes, str(self.server_id), call=self.call)

    @cached_property
    def sign_limiter(self) -> KeyedLimiter:
        """Per-agent signing rate (X.509 and JWT SVIDs), from ``[agent_limits]``."""
        limits = self.config.agent_limits
        return KeyedLimiter(rate=limits.sign_rate, burst=limits.sign_burst, what="signing")

    @cached_property
    def revoke_limiter(self) -> KeyedLimiter:
        """Per-agent RevokeOwn rate (serials and jtis), from ``[agent_limits]``."""
        limits = self.config.agent_limits
        return KeyedLimiter(rate=limits.revoke_rate, burst=limits.revoke_burst, what="RevokeOwn")

    @property
    def server_id(self) -> SpiffeId:
        """``spiffe://<td>/spire/server``."""
        return SpiffeId.from_segments(self.config.trust_domain, "spire", "server")

    def roots(self) -> tuple[x509.Certificate, ...]:
        """The X.509 roots of the current bundle."""
        return self.ca.bundle().x509_authorities

    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """Certificates between our leaves and the bundle roots (the active CA, when it is not a root)."""
        roots = set(self.roots())
        return tuple(c for c in self.ca.active_x509_ca().chain if c not in roots)

    def issued_chain(self, chain: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...]:
        """A signed chain without the bundle roots: leaf first, then intermediates."""
        roots = set(self.roots())
        return (chain[0], *(c for c in chain[1:] if c not in roots))

    def issued_chain_der(self, svid: SignedSvid) -> list[bytes]:
        """DER of :meth:`issued_chain`: the leaf as signed, then the part above it (cached per bundle and CA)."""
        return [svid.der, *self._above_leaf_der(svid.chain[1:])]

    def _above_leaf_der(self, above: tuple[x509.Certificate, ...]) -> tuple[bytes, ...]:
        bundle = self.ca.bundle()  # the same object until the CA state changes

        def build() -> tuple[bytes, ...]:
            roots = set(bundle.x509_authorities)
            return tuple(c.public_bytes(serialization.Encoding.DER) for c in above if c not in roots)

        return self._chain_der.get_or_build(Identity(bundle, *above), build)

    async def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking datastore/CA call off the event loop."""
        return await asyncio.to_thread(func, *args, **kwargs)
