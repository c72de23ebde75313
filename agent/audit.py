"""The agent's audit trail: a local hash-chained JSONL file (0600) forwarded to the server.

Records are written (write(2)) before the request they describe returns, so they survive an
agent crash; fsync is batched (group commit, ``fsync="interval"``: at most ``flush_interval``
later) or done per record (``fsync="always"``); docs/audit.md describes the power-loss window.
A forwarder task (``spiffe_py.audit_forward``, shared with the broker) sends the records that are
on disk to the server with ``AgentAPI.ForwardAudit``, in batches, from the last acknowledged byte
offset of the file, kept in ``audit.forwarded``; so nothing is lost across server outages or agent
restarts (the server skips records it already has)::

    audit = AgentAudit.open(Path(cfg.data_dir))
    audit.append(build_event(now=clock.now(), actor="agent", ...))
    await audit.forward_forever(manager.server_client)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol

from prometheus_client import Counter

from spiffe_agent.errors import NotReadyError
from spiffe_agent.metrics import HotCounter
from spiffe_py.audit import AuditEvent, AuditLog, FsyncMode, JsonlFileSink, last_rotated_record, load_jsonl
from spiffe_py.audit_forward import MAX_BATCH, ForwardHooks, Send, TrailForwarder

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
POSITION_FILE = "audit.forwarded"
NOT_ATTESTED_POLL = 1.0  # until the first attestation there is no server connection to forward to
FLUSH_INTERVAL = 0.05
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
_HOOKS = ForwardHooks(forwarded=AUDIT_FORWARDED.inc, failed=lambda _: AUDIT_FORWARD_FAILURES.inc())

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


class AgentAudit:
    """The local chain plus the forwarding position."""

    def __init__(self, log_: AuditLog, sink: JsonlFileSink, position_path: Path, *,
                 batch_window: float = FLUSH_INTERVAL) -> None:
        self._log = log_
        self._sink = sink
        self.path = sink.path
        self._forwarder = TrailForwarder(sink, position_path, hooks=_HOOKS, batch_window=batch_window)

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
        self._forwarder.wake()

    def sync(self) -> int:
        """fsync pending records now; the byte offset known to be on disk."""
        return self._sink.sync()

    def close(self) -> None:
        """fsync what is pending and stop the flusher thread."""
        self._sink.close()

    def position(self) -> int:
        """Byte offset of the first record not yet acknowledged by the server."""
        return self._forwarder.position()

    async def forward_once(self, client: AuditForwarder) -> int:
        """Forward one batch of on-disk records from the saved position; returns how many were sent."""
        return await self._forwarder.forward_once(client.forward_audit)

    async def forward_forever(self, client: Callable[[], AuditForwarder]) -> None:
        """Forward until cancelled, retrying with exponential backoff while the server is unreachable."""

        async def connect() -> Send:
            while True:
                try:
                    return client().forward_audit
                except NotReadyError as err:
                    # expected at start-up, not a failure: wait quietly until the agent is attested
                    log.debug("audit: forwarding waits for attestation: %s", err)
                    await asyncio.sleep(NOT_ATTESTED_POLL)

        await self._forwarder.forward_forever(connect)


__all__ = ["MAX_BATCH", "AgentAudit", "AuditForwarder"]
