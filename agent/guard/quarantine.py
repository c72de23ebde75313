"""Entries quarantined by this agent: blocked here at once, reported to the server until it accepts.

The server's flag governs as soon as sync shows it (or shows a newer, unquarantined revision)::

    book = QuarantineBook(call=client.quarantine_entry)
    book.quarantine(entry, "anomaly new_audience")   # background retry until the server accepts
    book.quarantined(entry)                           # the reason, or None
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from spiffe_agent.manager.cache import Entry
from spiffe_py._policy import QUARANTINE_REASON_LABEL

log = logging.getLogger("spiffe_agent.guard")

QUARANTINE_RETRY = 5.0
QUARANTINES = Counter("spiffe_agent_quarantines_total", "Identities quarantined by the agent")

QuarantineCall = Callable[[str, str], Awaitable[object]]


class QuarantineBook:
    """Pending local quarantines and the server's answers to them."""

    def __init__(self, call: QuarantineCall | None) -> None:
        self._call = call
        # entry id -> (reason, entry revision then): quarantined here, not yet seen quarantined from the server
        self._pending: dict[str, tuple[str, int]] = {}
        self._confirmed: set[str] = set()  # pending ids the server accepted
        self._tasks: set[asyncio.Task[None]] = set()

    def quarantine(self, entry: Entry, reason: str) -> None:
        """Stop serving ``entry`` now and ask the server to quarantine it (retried in the background)."""
        if entry.id in self._pending:
            return
        self._pending[entry.id] = (reason, entry.revision)
        QUARANTINES.inc()
        log.warning("quarantining entry %s (%s): %s", entry.id, entry.spiffe_id, reason)
        if self._call is not None:
            task = asyncio.get_running_loop().create_task(self._ask_server(self._call, entry.id, reason))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask_server(self, call: QuarantineCall, entry_id: str, reason: str) -> None:
        while entry_id in self._pending:
            try:
                await call(entry_id, reason)
                self._confirmed.add(entry_id)
                return
            except Exception as err:  # keep retrying; the entry stays blocked locally meanwhile
                log.warning("quarantine of entry %s not accepted by the server yet: %s", entry_id, err)
                await asyncio.sleep(QUARANTINE_RETRY)

    def quarantined(self, entry: Entry | None) -> str | None:
        """The quarantine reason if ``entry`` is quarantined (by the server, or here and not yet synced)."""
        if entry is None:
            return None
        pending = self._pending.get(entry.id)
        if entry.quarantined or (pending and entry.id in self._confirmed and entry.revision > pending[1]):
            # the server's flag governs from now on (a newer unquarantined revision means it was cleared)
            self._pending.pop(entry.id, None)
            self._confirmed.discard(entry.id)
            if not entry.quarantined:
                return None
            return entry.labels.get(QUARANTINE_REASON_LABEL) or "quarantined by the server"
        return pending[0] if pending else None
