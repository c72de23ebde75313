"""How the agent's sync loop groups a paged full sync (agent/manager/sync.py), pure asyncio.

A full sync spans several messages and must be applied as one batch, or workloads would see a
half-applied view. The server's first message counts the messages; older servers do not, and
then the burst ends after SYNC_QUIET without a message.
"""

from __future__ import annotations

import asyncio
import time

from spiffe_agent.manager import sync
from spiffe_agent.manager.cache import SyncUpdate


async def _feed(queue: asyncio.Queue[SyncUpdate | None], items: list[SyncUpdate | None], gap: float) -> None:
    for item in items:
        await asyncio.sleep(gap)
        queue.put_nowait(item)


async def test_a_counted_snapshot_is_complete_when_its_last_message_arrives() -> None:
    queue: asyncio.Queue[SyncUpdate | None] = asyncio.Queue()
    pages = [SyncUpdate(full=False), SyncUpdate(full=False)]
    later = SyncUpdate(full=False, removed_entry_ids=("x",))  # a change after the snapshot: not part of it
    feeder = asyncio.create_task(_feed(queue, [*pages, later], gap=sync.SYNC_QUIET * 1.5))  # slower than the quiet rule
    start = time.monotonic()
    rest = await sync._rest_of_snapshot(queue, 3)
    elapsed = time.monotonic() - start
    assert rest == pages
    assert elapsed < sync.SYNC_QUIET * 3 + 0.5  # returned on the last page, without waiting for quiet
    assert await queue.get() is later
    await feeder


async def test_an_uncounted_snapshot_ends_after_the_quiet_time() -> None:
    queue: asyncio.Queue[SyncUpdate | None] = asyncio.Queue()
    pages = [SyncUpdate(full=False), SyncUpdate(full=False)]
    for page in pages:
        queue.put_nowait(page)
    start = time.monotonic()
    assert await sync._rest_of_snapshot(queue, 0) == pages
    assert time.monotonic() - start >= sync.SYNC_QUIET * 0.9


async def test_the_end_of_the_stream_ends_a_counted_snapshot() -> None:
    queue: asyncio.Queue[SyncUpdate | None] = asyncio.Queue()
    queue.put_nowait(SyncUpdate(full=False))
    queue.put_nowait(None)
    assert await asyncio.wait_for(sync._rest_of_snapshot(queue, 5), 2.0) == [SyncUpdate(full=False), None]


async def test_a_one_message_snapshot_does_not_wait() -> None:
    queue: asyncio.Queue[SyncUpdate | None] = asyncio.Queue()
    assert await asyncio.wait_for(sync._rest_of_snapshot(queue, 1), 0.05) == []
