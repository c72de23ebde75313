"""Forwarding a local audit trail (``spiffe_py.audit``) to the server, shared by the agent and the broker.

The records on disk are sent in batches with the server's ``AgentAPI.ForwardAudit``, from the
last acknowledged byte offset of the trail, kept in a position file; so nothing is lost across
server outages or restarts (the server skips records it already has). A permanent refusal
(:data:`REFUSED_STATUSES`: the caller is not allowed to forward) is logged once at ERROR and
retried every :data:`REFUSED_RETRY` only, as each refused call is a deny record in the server's
central chain; other failures are retried with exponential backoff. Only fsynced records
leave: after a power loss the server must never hold a record the local chain lost. The call
itself is injected (a :data:`Send`), and so are the metrics (:class:`ForwardHooks`)::

    forwarder = TrailForwarder(sink, data_dir / "audit.forwarded", hooks=ForwardHooks(forwarded=COUNTER.inc))
    log_.append(event); forwarder.wake()                 # after each record
    await forwarder.forward_forever(connect)             # connect() -> the Send to use this round

:func:`split_batch` is the pure part: the complete lines of a read, at most :data:`MAX_BATCH`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from spiffe_py.audit import JsonlFileSink
from spiffe_py.errors import SpiffeError
from spiffe_py.fsutil import write_private

log = logging.getLogger(__name__)

MAX_BATCH = 500  # records per ForwardAudit call (the server accepts up to 1000)
MAX_BATCH_BYTES = 2 * 1024 * 1024
FIRST_BACKOFF = 1.0  # seconds after the first failed call, doubling up to MAX_BACKOFF
MAX_BACKOFF = 30.0
# the server refuses the caller itself (not in [audit] forwarders, evicted, SVID revoked): no retry
# can succeed until an operator acts, and each one adds a deny record to the server's chain
REFUSED_STATUSES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})
REFUSED_RETRY = 600.0  # seconds between calls while refused
IDLE_POLL = 5.0
BATCH_WINDOW = 0.05
# while records keep coming, one ForwardAudit per this many seconds (unless a batch is full): per-RPC
# costs (fsync, position file, TLS) on both sides are paid per batch, and busy batches grow instead
FORWARD_INTERVAL = 0.5

Send = Callable[[list[str]], Awaitable[object]]
"""Sends canonical JSON records (chain order) to the server; raises SpiffeError or OSError on failure.

A failed call's error carries the gRPC status name in ``status`` (e.g. ``"PERMISSION_DENIED"``)."""


def _nothing(_: object) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ForwardHooks:
    """Metrics callbacks: ``forwarded(n)`` after the server acknowledged n records, ``failed(err)`` per failed call."""

    forwarded: Callable[[int], object] = _nothing
    failed: Callable[[Exception], object] = _nothing


def split_batch(data: bytes, offset: int) -> tuple[list[str], int]:
    """The complete lines of ``data`` (read at ``offset``), at most MAX_BATCH; the offset after them."""
    lines: list[str] = []
    end = offset
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n") or len(lines) >= MAX_BATCH:
            break  # a partial last line is still being written
        lines.append(raw.decode().rstrip("\n"))
        end += len(raw)
    return lines, end


def _log_refusal(status: str, err: Exception, *, first: bool) -> None:
    if not first:
        log.debug("audit: still refused (%s), retrying in %.0fs: %s", status, REFUSED_RETRY, err)
        return
    log.error(
        "audit: the server refuses to take this audit trail (%s): a workload such as the broker must be listed "
        "in the server's [audit] forwarders, an agent must be attested again (evicted, or its SVID revoked); "
        "the records stay on disk, retried every %.0fs: %s",
        status,
        REFUSED_RETRY,
        err,
    )


class TrailForwarder:
    """Sends the records of one trail (a :class:`JsonlFileSink`) from the saved position."""

    def __init__(
        self,
        sink: JsonlFileSink,
        position_path: Path,
        *,
        hooks: ForwardHooks | None = None,
        batch_window: float = BATCH_WINDOW,
        forward_interval: float = FORWARD_INTERVAL,
    ) -> None:
        self._sink = sink
        self._position_path = position_path
        self._hooks = hooks or ForwardHooks()
        self._batch_window = batch_window
        self._forward_interval = max(forward_interval, batch_window)
        self._position = self._read_position()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A record was appended: an idle :meth:`forward_forever` sends it after the batch window."""
        self._wake.set()

    def position(self) -> int:
        """Byte offset of the first record not yet acknowledged by the server."""
        return self._position

    def _read_position(self) -> int:
        try:
            return int(self._position_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _save_position(self, offset: int) -> None:
        write_private(self._position_path, f"{offset}\n".encode())

    async def forward_once(self, send: Send) -> int:
        """Forward one batch of on-disk records from the saved position; returns how many were sent."""
        durable = await asyncio.to_thread(self._sink.sync)
        data, offset = await asyncio.to_thread(self._sink.read_from, self._position, durable, MAX_BATCH_BYTES)
        if offset != self._position:
            log.error(
                "audit: records from offset %d were rotated away before the server had them; forwarding "
                "resumes at offset %d",
                self._position,
                offset,
            )
        lines, end = split_batch(data, offset)
        if not lines:
            if offset != self._position:
                await asyncio.to_thread(self._save_position, offset)
                self._position = offset
            return 0
        await send(lines)
        # once per batch, atomically: a crash before it re-sends only this batch, which the
        # server recognises (it overlaps the server's head) and skips
        await asyncio.to_thread(self._save_position, end)
        self._position = end
        self._hooks.forwarded(len(lines))
        return len(lines)

    async def forward_forever(self, connect: Callable[[], Awaitable[Send]]) -> None:
        """Forward until cancelled, retrying with exponential backoff while the server is unreachable.

        While the server refuses the caller (:data:`REFUSED_STATUSES`) it retries every
        :data:`REFUSED_RETRY` only, until a call succeeds. ``connect()`` gives the :data:`Send` of
        each round; it may wait (e.g. until the agent is attested).
        """
        backoff = FIRST_BACKOFF
        refused = False  # logged at ERROR once; cleared by the next successful call
        while True:
            self._wake.clear()  # before reading, so a record appended meanwhile wakes the next round
            try:
                sent = await self.forward_once(await connect())
            except (SpiffeError, OSError) as err:
                self._hooks.failed(err)
                status = getattr(err, "status", None)
                if status in REFUSED_STATUSES:
                    _log_refusal(status, err, first=not refused)
                    refused = True
                    await asyncio.sleep(REFUSED_RETRY)
                    continue
                log.warning("audit: forwarding failed, retrying in %.0fs: %s", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = FIRST_BACKOFF
            if refused:
                refused = False
                log.info("audit: the server takes the audit trail again; forwarding resumed")
            if sent == 0:
                # woken by the next append, or polls anyway (another process may not wake us)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                await asyncio.sleep(self._batch_window)  # let records gather: one RPC per batch, not per record
            elif sent < MAX_BATCH:
                # records are flowing: the next batch goes out one forward interval later (a full one at once)
                await asyncio.sleep(self._forward_interval)


__all__ = ["MAX_BATCH", "MAX_BATCH_BYTES", "ForwardHooks", "Send", "TrailForwarder", "split_batch"]
