"""The per-server view of agents' syncs: last sync, open streams, and its bound."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spiffe_server.api.syncs import SyncTracker

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_last_sync_and_open_streams() -> None:
    syncs = SyncTracker()
    assert syncs.state("a") == (None, False)
    syncs.opened("a", now=NOW)
    syncs.opened("a", now=NOW)  # a second stream (the agent reconnecting before the old one ended)
    syncs.synced("a", now=NOW - timedelta(seconds=5))  # a late report never moves it back
    syncs.closed("a")
    assert syncs.state("a") == (NOW, True)
    syncs.closed("a")
    syncs.closed("a")  # more closes than opens stay at none open
    syncs.synced("a", now=NOW + timedelta(seconds=1))
    assert syncs.state("a") == (NOW + timedelta(seconds=1), False)


def test_beyond_the_bound_the_longest_idle_agents_without_a_stream_are_forgotten() -> None:
    syncs = SyncTracker(max_tracked=10)
    syncs.opened("connected", now=NOW)
    for n in range(10):
        syncs.synced(f"idle-{n}", now=NOW + timedelta(seconds=n + 1))
    assert syncs.state("connected") == (NOW, True)  # the oldest, but its stream is open
    assert syncs.state("idle-0")[0] is None and syncs.state("idle-1")[0] is None
    assert syncs.state("idle-2")[0] == NOW + timedelta(seconds=3)
