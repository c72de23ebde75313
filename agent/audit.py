"""The agent's audit trail: a local hash-chained JSONL file (0600) forwarded to the server.

Records are written (write(2)) before the request they describe returns, so they survive an
agent crash; fsync is batched (group commit, ``fsync="interval"``: at most ``flush_interval``
later) or done per record (``fsync="always"``); docs/audit.md describes the power-loss window.
A forwarder task sends the records that are on disk to the server with ``AgentAPI.ForwardAudit``,
in batches (after an idle spell within ``flush_interval``; while records keep coming, one batch
per ``FORWARD_INTERVAL``), from the last acknowledged byte offset of the file, kept in ``audit.forwarded``; so
nothing is lost across server outages or agent restarts (the server skips records it already has)::

    audit = AgentAudit.open(Path(cfg.data_dir))
    audit.append(build_event(now=clock.now(), actor="agent", ...))
    await audit.forward_forever(manager.server_client)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter

from spiffe_agent.errors import NotReadyError
from spiffe_agent.metrics import HotCounter
from spiffe_py.audit import AuditEvent, AuditLog, FsyncMode, JsonlFileSink, last_rotated_record, load_jsonl
from spiffe_py.errors import SpiffeError
from spiffe_py.fsutil import write_private

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
POSITION_FILE = "audit.forwarded"
MAX_BATCH = 500  # records per ForwardAudit call (the server accepts up to 1000)
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_BACKOFF = 30.0
IDLE_POLL = 5.0
NOT_ATTESTED_POLL = 1.0  # until the first attestation there is no server connection to forward to
FLUSH_INTERVAL = 0.05
# while records keep coming, one ForwardAudit per this many seconds (unless a batch is full): per-RPC
# costs (fsync, position file, TLS) on both sides are paid per batch, and busy batches grow instead
FORWARD_INTERVAL = 0.5
FLUSH_RECORDS = 256
# the trail rotates to a new file at this size, keeping this many rotated files (docs/audit.md): the
# active file, read and verified at every start, stays small, and the disk use is bounded
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_FILES = 8

AUDIT_RECORDS = HotCounter("spiffe_agent_audit_records", "Audit records written", ("decision",))
AUDIT_WRITE_FAILURES = Counter("spiffe_agent_audit_write_failures_total", "Audit records that could not be written")
AUDIT_FSYNC_FAILURES = Counter("spiffe_agent_audit_fsync_failures_total", "Failed fsyncs of the audit file")
AUDIT_FORWARDED = Counter("spiffe_agent_audit_forwarded_total", "Audit records acknowledged by the server")
AUDIT_FORWARD_FAILURES = Counter("spiffe_agent_audit_forward_failures_total", "Failed ForwardAudit calls")


class AuditForwarder(Protocol):
    """What the forwarder needs from the server connection."""

    async def forward_audit(self, records: list[str]) -> int:
        """Send records; returns how many the server accepted."""
        ...


def _write_failed(err: OSError) -> None:
    AUDIT_WRITE_FAILURES.inc()
    log.error("AUDIT WRITE FAILED: %s", err)


def _fsync_failed(err: OSError) -> None:
    AUDIT_FSYNC_FAILURES.inc()
    log.error("AUDIT FSYNC FAILED: recent records may not be on disk; the next request will fail: %s", err)


def read_batch(path: Path, offset: int, limit: int | None = None) -> tuple[list[str], int]:
    """Complete lines from ``offset`` to byte ``limit`` (at most MAX_BATCH / MAX_BATCH_BYTES); the offset after them."""
    size = MAX_BATCH_BYTES if limit is None else max(0, min(MAX_BATCH_BYTES, limit - offset))
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
    except FileNotFoundError:
        return [], offset
    return split_batch(data, offset)


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


class AgentAudit:
    """The local chain plus the forwarding position."""

    def __init__(self, log_: AuditLog, sink: JsonlFileSink, position_path: Path, *,
                 batch_window: float = FLUSH_INTERVAL, forward_interval: float = FORWARD_INTERVAL) -> None:
        self._log = log_
        self._batch_window = batch_window
        self._forward_interval = max(forward_interval, batch_window)
        self._sink = sink
        self.path = sink.path
        self._position_path = position_path
        self._position = self._read_position()
        self._wake = asyncio.Event()

    @classmethod
    def open(cls, data_dir: Path, *, fsync: FsyncMode | str = FsyncMode.INTERVAL,
             flush_interval: float = FLUSH_INTERVAL, max_file_bytes: int = MAX_FILE_BYTES,
             max_files: int = MAX_FILES) -> AgentAudit:
        """Open (or create) ``data_dir/audit.jsonl``; AuditChainError if the file was tampered with.

        Only the active file is read and verified (it continues the last record of the file
        rotated out before it); ``spiffe-server audit verify --file`` checks the whole trail.
        """
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = data_dir / AUDIT_FILE
        records = load_jsonl(path) if path.exists() else []
        sink = JsonlFileSink(path, on_error=_write_failed, on_fsync_error=_fsync_failed, fsync=FsyncMode(fsync),
                             flush_interval=flush_interval, flush_records=FLUSH_RECORDS, max_bytes=max_file_bytes,
                             max_files=max_files)
        log_ = AuditLog.resume(sink, records, after=last_rotated_record(path))
        return cls(log_, sink, data_dir / POSITION_FILE, batch_window=flush_interval)

    def append(self, event: AuditEvent, *, at: datetime | None = None) -> None:
        """Seal and write one record (on disk within the flush interval); AuditWriteError if storage fails.

        ``at``: record ``event`` stamped at that time instead of its own (a repeated decision: see AuditLog.write).
        """
        self._log.write(event, at=at)
        AUDIT_RECORDS.inc(str(event.decision))
        self._wake.set()

    def sync(self) -> int:
        """fsync pending records now; the byte offset known to be on disk."""
        return self._sink.sync()

    def close(self) -> None:
        """fsync what is pending and stop the flusher thread."""
        self._sink.close()

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

    async def forward_once(self, client: AuditForwarder) -> int:
        """Forward one batch of on-disk records from the saved position; returns how many were sent."""
        # only fsynced records leave the agent: after a power loss the server must never hold a
        # record the local chain lost, or the re-written seq would be refused as a chain break
        durable = await asyncio.to_thread(self._sink.sync)
        data, offset = await asyncio.to_thread(self._sink.read_from, self._position, durable, MAX_BATCH_BYTES)
        if offset != self._position:
            log.error("audit: records from offset %d were rotated away before the server had them; forwarding "
                      "resumes at offset %d", self._position, offset)
        lines, end = split_batch(data, offset)
        if not lines:
            if offset != self._position:
                await asyncio.to_thread(self._save_position, offset)
                self._position = offset
            return 0
        await client.forward_audit(lines)
        # once per batch, atomically: a crash before it re-sends only this batch, which the
        # server recognises (it overlaps the server's head) and skips
        await asyncio.to_thread(self._save_position, end)
        self._position = end
        AUDIT_FORWARDED.inc(len(lines))
        return len(lines)

    async def forward_forever(self, client: Callable[[], AuditForwarder]) -> None:
        """Forward until cancelled, retrying with exponential backoff while the server is unreachable."""
        backoff = 1.0
        while True:
            self._wake.clear()  # before reading, so a record appended meanwhile wakes the next round
            try:
                sent = await self.forward_once(client())
                backoff = 1.0
            except NotReadyError as err:
                # expected at start-up, not a failure: wait quietly until the agent is attested
                log.debug("audit: forwarding waits for attestation: %s", err)
                await asyncio.sleep(NOT_ATTESTED_POLL)
                continue
            except (SpiffeError, OSError) as err:
                AUDIT_FORWARD_FAILURES.inc()
                log.warning("audit: forwarding failed, retrying in %.0fs: %s", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if sent == 0:
                # woken by the next append, or polls anyway (another process may not wake us)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_POLL)
                await asyncio.sleep(self._batch_window)  # let records gather: one RPC per batch, not per record
            elif sent < MAX_BATCH:
                # records are flowing: the next batch goes out one forward interval later (a full one at once)
                await asyncio.sleep(self._forward_interval)
