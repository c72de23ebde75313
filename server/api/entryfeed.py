"""The I/O shell around server/entryindex.py: reads the datastore change log into the index, wakes streams.

In a running server the datastore reports every commit (its own, and on PostgreSQL other
servers' through LISTEN/NOTIFY) with ``committed()``; writers' ``notify()`` matters only where
nothing reports commits (a ServerContext used without the app). The feed (one task) reads the
changes since the index's position, fetches the entries they name, applies them, and wakes only
the SyncAuthorized streams whose view the changes touch (an agent change wakes that agent's
streams, a bundle or revocation change wakes all). It also polls, to pick up changes made by
another server sharing a SQLite file, and as a safety net on PostgreSQL::

    feed = EntryFeed(store, ChangeNotifier(), server_id, call=ctx.call)
    watch = feed.notifier.subscribe(agent_id)      # watch.event is set when the agent is affected
    await feed.catch_up()                          # the index now reflects every committed change
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spiffe_server.datastore import ChangeKind, DataStore, Page, RegistrationEntry
from spiffe_server.entryindex import AgentView, Delta, EntryIndex

log = logging.getLogger("spiffe_server.entry_feed")

T = TypeVar("T")
Call = Callable[..., Awaitable[Any]]

CHANGES_PER_READ = 1000
LOAD_PAGE = 1000


@dataclass(eq=False)
class Watch:
    """One SyncAuthorized stream's subscription: its agent, the view it last sent, and its wake-up event."""

    agent_id: str
    event: asyncio.Event = field(default_factory=asyncio.Event)
    view: AgentView | None = None
    # the agent's record, or what every agent receives (revocations, bundles, policy), may have
    # changed: the stream re-reads them before its next push (entry-only changes need neither)
    recheck: bool = True


class ChangeNotifier:
    """Wakes the SyncAuthorized streams affected by a change (the push side of SyncAuthorized)."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self.poked = asyncio.Event()
        # set once the datastore reports its own commits (DataStore.watch_changes -> committed()):
        # writers' notify() calls are then redundant, and skipping them saves a second, empty read
        self.store_reports_commits = False

    def subscribe(self, agent_id: str) -> Watch:
        """A new watch for ``agent_id``; pass it to :meth:`unsubscribe` when done."""
        watch = Watch(agent_id)
        self._watches.add(watch)
        return watch

    def unsubscribe(self, watch: Watch) -> None:
        """Stop waking ``watch``."""
        self._watches.discard(watch)

    def notify(self) -> None:
        """A writer changed the datastore: the feed reads the change log and wakes the streams it affects."""
        if not self.store_reports_commits:
            self.poked.set()

    def committed(self) -> None:
        """The datastore reports a commit (this server's, or another's through the backend)."""
        self.poked.set()

    def notify_all(self) -> None:
        """Something every agent receives changed (bundle, CRLs, policy): wake every stream."""
        for watch in self._watches:
            watch.recheck = True
            watch.event.set()

    def wake(self, deltas: list[Delta], agents: Iterable[str], *, server_id: str) -> None:
        """Wake the streams of ``agents`` and those whose view ``deltas`` touch."""
        agent_ids = set(agents)
        for watch in self._watches:
            if watch.agent_id in agent_ids:  # its record changed (ban, eviction, renewal, selectors)
                watch.recheck = True
                watch.event.set()
            elif watch.event.is_set():
                continue
            elif watch.view is None or (deltas and watch.view.touched_by(deltas, server_id)):
                watch.event.set()


@dataclass(frozen=True, slots=True)
class _Read:
    """Changes read from the log: entries' current state, agents touched, whether all must wake."""

    seq: int
    entries: dict[str, RegistrationEntry | None]
    agents: set[str]
    wake_all: bool
    more: bool
    truncated: bool


def _load_all(store: DataStore) -> tuple[int, list[RegistrationEntry]]:
    """Blocking: the log position, then every entry (read after it, so nothing is missed)."""
    seq = store.change_seq()
    entries: list[RegistrationEntry] = []
    token = ""
    while True:
        page = store.list_entries(page=Page(size=LOAD_PAGE, token=token))
        entries.extend(page.items)
        token = page.next_token
        if not token:
            return seq, entries


def _read_since(store: DataStore, seq: int) -> _Read:
    """Blocking: the changes after ``seq`` and the current state of the entries they name."""
    batch = store.changes_since(seq, limit=CHANGES_PER_READ)
    if batch.history_truncated:
        return _Read(seq, {}, set(), True, False, True)
    ids: dict[str, None] = {}
    agents: set[str] = set()
    wake_all = False
    for change in batch.changes:
        if change.kind is ChangeKind.ENTRY:
            ids[change.key] = None
        elif change.kind is ChangeKind.AGENT:
            agents.add(change.key)
        else:  # bundles and revocations reach every agent
            wake_all = True
    found = store.get_entries(ids)  # CHANGES_PER_READ is within the store's IDs-per-query bound
    entries: dict[str, RegistrationEntry | None] = {eid: found.get(eid) for eid in ids}
    last = batch.changes[-1].seq if batch.changes else seq
    return _Read(last, entries, agents, wake_all, len(batch.changes) >= CHANGES_PER_READ, False)


class EntryFeed:
    """Keeps an :class:`EntryIndex` current from the datastore change log."""

    def __init__(self, store: DataStore, notifier: ChangeNotifier, server_id: str, *, call: Call) -> None:
        self._store = store
        self._call = call
        self.notifier = notifier
        self.index = EntryIndex(server_id)
        self._lock = asyncio.Lock()

    async def catch_up(self) -> EntryIndex:
        """Apply every change committed so far (a first call loads all entries); returns the index."""
        index, notifier = self.index, self.notifier
        async with self._lock:
            if not index.loaded:
                await self._reload()
            while True:
                read: _Read = await self._call(_read_since, self._store, index.seq)
                if read.truncated:  # this server fell behind the retained log: reload and diff
                    log.info("change log pruned past this server's position: reloading entries",
                             extra={"seq": index.seq})
                    await self._reload()
                    notifier.notify_all()
                    continue
                deltas = index.apply(read.entries, seq=read.seq)
                if read.wake_all:
                    notifier.notify_all()
                else:
                    notifier.wake(deltas, read.agents, server_id=index.server_id)
                if not read.more:
                    return index

    async def loaded(self) -> EntryIndex:
        """The index as the feed last applied it (loaded first if needed): what woke a stream is in it."""
        return self.index if self.index.loaded else await self.catch_up()

    async def _reload(self) -> None:
        seq, entries = await self._call(_load_all, self._store)
        deltas = self.index.reset(entries, seq=seq)
        self.notifier.wake(deltas, (), server_id=self.index.server_id)

    async def run(self, poll_seconds: float) -> None:
        """Catch up whenever notified, and every ``poll_seconds`` (changes made by other servers)."""
        notifier = self.notifier
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(notifier.poked.wait(), poll_seconds)
            notifier.poked.clear()
            try:
                await self.catch_up()
            except Exception:  # a background loop logs and keeps going
                log.exception("entry feed catch-up failed")
