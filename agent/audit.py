"""The agent's audit trail: a local hash-chained JSONL file (0600) forwarded to the server.

Records are appended (and fsynced) before the request they describe returns. A forwarder
task sends them to the server with ``AgentAPI.ForwardAudit`` from the last acknowledged byte
offset of the file, which is kept in ``audit.forwarded``; so nothing is lost across
server outages or agent restarts (the server skips records it already has)::

    audit = AgentAudit.open(Path(cfg.data_dir))
    audit.append(build_event(now=clock.now(), actor="agent", ...))
    await audit.forward_forever(manager.server_client)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

from spiffe_py.audit import AuditEvent, AuditLog, JsonlFileSink, load_jsonl
from spiffe_py.errors import SpiffeError
from spiffe_py.fsutil import write_private

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"
POSITION_FILE = "audit.forwarded"
MAX_BATCH = 1000  # the server's ForwardAudit limit
MAX_BATCH_BYTES = 2 * 1024 * 1024
MAX_BACKOFF = 30.0
IDLE_POLL = 5.0

AUDIT_RECORDS = Counter("spiffe_agent_audit_records_total", "Audit records written", ["decision"])
AUDIT_WRITE_FAILURES = Counter("spiffe_agent_audit_write_failures_total", "Audit records that could not be written")
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


def read_batch(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines from ``offset`` (at most MAX_BATCH / MAX_BATCH_BYTES) and the offset after them."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(MAX_BATCH_BYTES)
    except FileNotFoundError:
        return [], offset
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

    def __init__(self, log_: AuditLog, path: Path, position_path: Path) -> None:
        self._log = log_
        self.path = path
        self._position_path = position_path
        self._wake = asyncio.Event()

    @classmethod
    def open(cls, data_dir: Path) -> AgentAudit:
        """Open (or create) ``data_dir/audit.jsonl``; AuditChainError if the file was tampered with."""
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = data_dir / AUDIT_FILE
        records = load_jsonl(path) if path.exists() else []
        audit_log = AuditLog.resume(JsonlFileSink(path, on_error=_write_failed), records)
        return cls(audit_log, path, data_dir / POSITION_FILE)

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Seal and write one record (fsynced); AuditWriteError if storage fails."""
        record = self._log.append(event)
        AUDIT_RECORDS.labels(decision=str(event.decision)).inc()
        self._wake.set()
        return record

    def position(self) -> int:
        """Byte offset of the first record not yet acknowledged by the server."""
        try:
            return int(self._position_path.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _save_position(self, offset: int) -> None:
        write_private(self._position_path, f"{offset}\n".encode())

    async def forward_once(self, client: AuditForwarder) -> int:
        """Forward one batch from the saved position; returns how many records were sent."""
        offset = self.position()
        lines, end = read_batch(self.path, offset)
        if not lines:
            return 0
        await client.forward_audit(lines)
        self._save_position(end)
        AUDIT_FORWARDED.inc(len(lines))
        return len(lines)

    async def forward_forever(self, client: Callable[[], AuditForwarder]) -> None:
        """Forward until cancelled, retrying with exponential backoff while the server is unreachable."""
        backoff = 1.0
        while True:
            try:
                sent = await self.forward_once(client())
                backoff = 1.0
            except (SpiffeError, OSError) as err:
                AUDIT_FORWARD_FAILURES.inc()
                log.warning("audit: forwarding failed, retrying in %.0fs: %s", backoff, err)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if sent == 0:
                self._wake.clear()
                await self._idle()

    async def _idle(self) -> None:
        # woken by the next append, or polls anyway (another process may not wake us)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), IDLE_POLL)

