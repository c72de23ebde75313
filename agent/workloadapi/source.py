"""What the Workload API handlers read, per caller: the manager's views and tokens, optionally guarded.

:class:`ManagerSource` is the plain source over the manager; :class:`GuardedSource` wraps a
plain source with the guard (policy, rate limits, anomalies, audit), so the handlers carry no
such branches::

    source = ManagerSource(manager)
    source = GuardedSource(source, guard)          # when the agent runs a guard
    async with source.subscribe(caller, selectors, svids=True) as sub:
        view = await sub.next()
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from spiffe_agent.attest.caller import Caller
from spiffe_agent.attest.procfs import ProcessKey
from spiffe_agent.guard.decision import WorkloadGuard, X509Gate
from spiffe_agent.manager.cache import Entry, JwtToken, WorkloadView
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId

Validate = Callable[[], tuple[SpiffeId, Mapping[str, Any]]]


class ViewSubscription(Protocol):
    """A stream's subscription to cache changes."""

    async def next(self) -> WorkloadView:
        """Wait for a change and return the current view."""
        ...


class WorkloadSource(Protocol):
    """What the handlers need, for one attested caller."""

    def view(self, caller: Caller, selectors: frozenset[Selector]) -> WorkloadView:
        """Current view; raises NotReadyError before the first sync."""
        ...

    def subscribe(self, caller: Caller, selectors: frozenset[Selector], *,
                  svids: bool) -> AbstractAsyncContextManager[ViewSubscription]:
        """Subscribe to changes (``svids``: the stream serves X.509-SVIDs)."""
        ...

    async def fetch_jwt(self, caller: Caller, selectors: frozenset[Selector], audience: Sequence[str],
                        spiffe_id: SpiffeId | None) -> list[tuple[Entry, JwtToken]]:
        """A JWT-SVID per identity of the caller (only ``spiffe_id``'s); NoIdentityIssuedError if none."""
        ...

    def validate_jwt(self, caller: Caller, selectors: frozenset[Selector], view: WorkloadView, audience: str,
                     validate: Validate) -> tuple[SpiffeId, Mapping[str, Any]]:
        """``validate()`` the caller's token: (subject, claims); SpiffeError when refused."""
        ...


class Manager(Protocol):
    """The parts of agent.manager.sync.Manager read per call (``process``: the caller's, for bound entries)."""

    def view(self, selectors: frozenset[Selector], process: ProcessKey | None = None) -> WorkloadView:
        """Current view."""
        ...

    def subscribe(self, selectors: frozenset[Selector], process: ProcessKey | None = None, *,
                  svids: bool = False) -> AbstractAsyncContextManager[ViewSubscription]:
        """Subscribe to changes (``svids``: an expired SVID raises instead of being served)."""
        ...

    def jwt_entries(self, selectors: frozenset[Selector], spiffe_id: SpiffeId | None = None,
                    process: ProcessKey | None = None) -> list[Entry]:
        """Entries a JWT-SVID can be minted for."""
        ...

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str],
                        process: ProcessKey | None = None) -> list[tuple[Entry, JwtToken]]:
        """A JWT-SVID for each entry."""
        ...


class ManagerSource:
    """The plain source: the manager's views and tokens for the caller's process."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    def view(self, caller: Caller, selectors: frozenset[Selector]) -> WorkloadView:
        return self.manager.view(selectors, caller.process)

    def subscribe(self, caller: Caller, selectors: frozenset[Selector], *,
                  svids: bool) -> AbstractAsyncContextManager[ViewSubscription]:
        return self.manager.subscribe(selectors, caller.process, svids=svids)

    def jwt_entries(self, caller: Caller, selectors: frozenset[Selector],
                    spiffe_id: SpiffeId | None) -> list[Entry]:
        """The caller's entries a JWT-SVID can be minted for."""
        return self.manager.jwt_entries(selectors, spiffe_id, caller.process)

    async def jwt_svids(self, caller: Caller, entries: Sequence[Entry],
                        audience: Sequence[str]) -> list[tuple[Entry, JwtToken]]:
        """A JWT-SVID for each of ``entries``, for the caller."""
        return await self.manager.jwt_svids(entries, audience, caller.process)

    async def fetch_jwt(self, caller: Caller, selectors: frozenset[Selector], audience: Sequence[str],
                        spiffe_id: SpiffeId | None) -> list[tuple[Entry, JwtToken]]:
        return await self.jwt_svids(caller, self.jwt_entries(caller, selectors, spiffe_id), audience)

    def validate_jwt(self, caller: Caller, selectors: frozenset[Selector], view: WorkloadView, audience: str,
                     validate: Validate) -> tuple[SpiffeId, Mapping[str, Any]]:
        return validate()


class _GatedSubscription:
    """A FetchX509SVID subscription whose minted views pass the guard's gate (refused identities left out)."""

    def __init__(self, inner: ViewSubscription, gate: X509Gate) -> None:
        self._inner = inner
        self._gate = gate

    async def next(self) -> WorkloadView:
        view = await self._inner.next()
        if not view.complete or not view.svids():
            return view  # not servable yet (or nothing minted): the handler waits or refuses as without a guard
        return self._gate.apply(view)


class GuardedSource:
    """A plain source with policy, rate limits, anomaly detection and audit around every call."""

    def __init__(self, inner: ManagerSource, guard: WorkloadGuard) -> None:
        self._inner = inner
        self._guard = guard

    def view(self, caller: Caller, selectors: frozenset[Selector]) -> WorkloadView:
        return self._inner.view(caller, selectors)

    @contextlib.asynccontextmanager
    async def subscribe(self, caller: Caller, selectors: frozenset[Selector], *,
                        svids: bool) -> AsyncIterator[ViewSubscription]:
        async with self._inner.subscribe(caller, selectors, svids=svids) as sub:
            yield _GatedSubscription(sub, self._guard.x509_gate(caller.cred, selectors)) if svids else sub

    async def fetch_jwt(self, caller: Caller, selectors: frozenset[Selector], audience: Sequence[str],
                        spiffe_id: SpiffeId | None) -> list[tuple[Entry, JwtToken]]:
        facts = self._guard.facts(caller.cred, selectors)
        verdicts = self._guard.jwt_verdicts(self._inner.jwt_entries(caller, selectors, spiffe_id), facts, audience,
                                            spiffe_id)
        minted = await self._inner.jwt_svids(caller, [e for e, v in verdicts if v.allowed], audience)
        self._guard.jwt_issued(minted, verdicts, facts, audience)
        return minted

    def validate_jwt(self, caller: Caller, selectors: frozenset[Selector], view: WorkloadView, audience: str,
                     validate: Validate) -> tuple[SpiffeId, Mapping[str, Any]]:
        return self._guard.validate_jwt(view, selectors, caller.cred, audience, validate)
