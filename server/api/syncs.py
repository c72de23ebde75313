"""This server's in-memory view of each agent's sync with it: the last sync, and open streams.

Only the server an agent talks to knows: servers sharing a database keep separate views, and a
restart forgets them. The agent service records; the admin API reports (``Agent.last_sync``,
``Agent.syncing``)::

    ctx.syncs.opened(agent_id, now=now)     # a SyncAuthorized stream opened (the full state follows)
    ctx.syncs.synced(agent_id, now=now)     # an update pushed on it, or SVIDs signed for the agent
    ctx.syncs.closed(agent_id)              # the stream ended
    last, syncing = ctx.syncs.state(agent_id)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

MAX_TRACKED = 200_000  # agents remembered; beyond it the longest-idle ones without a stream are forgotten


@dataclass(slots=True)
class _Sync:
    last: datetime
    streams: int = 0


class SyncTracker:
    """Per agent: when it last synced with this server, and how many SyncAuthorized streams are open."""

    def __init__(self, max_tracked: int = MAX_TRACKED) -> None:
        self._agents: dict[str, _Sync] = {}
        self._max = max_tracked

    def synced(self, agent_id: str, *, now: datetime) -> None:
        """The agent synced now (an update pushed, SVIDs signed)."""
        known = self._agents.get(agent_id)
        if known is None:
            self._agents[agent_id] = _Sync(now)
            self._bound()
        else:
            known.last = max(known.last, now)

    def opened(self, agent_id: str, *, now: datetime) -> None:
        """A SyncAuthorized stream of the agent opened."""
        self.synced(agent_id, now=now)
        self._agents[agent_id].streams += 1

    def closed(self, agent_id: str) -> None:
        """One of the agent's streams ended."""
        known = self._agents.get(agent_id)
        if known is not None and known.streams > 0:
            known.streams -= 1

    def state(self, agent_id: str) -> tuple[datetime | None, bool]:
        """(last sync or None if not since this server started, whether a stream is open now)."""
        known = self._agents.get(agent_id)
        return (None, False) if known is None else (known.last, known.streams > 0)

    def _bound(self) -> None:
        if len(self._agents) <= self._max:
            return
        idle = sorted((s.last, a) for a, s in self._agents.items() if s.streams == 0)
        for _, agent_id in idle[:max(1, len(self._agents) - self._max * 9 // 10)]:
            del self._agents[agent_id]
