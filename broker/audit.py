"""The broker's audit trail: the same hash-chained JSONL format as the server and agent (spiffe_py.audit).

One record per proxied request and per token exchange, with caller, upstream, method, path,
model, status, tokens and duration; never a key, body or token (``build_event`` also refuses
anything that looks like a JWT or a private key). The trail is local, ``<data_dir>/audit.jsonl``
(0600): the server's ForwardAudit accepts only agents, and the broker is a workload.
``spiffe-server audit verify --file`` checks it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from spiffe_py.audit import (
    AuditLog,
    AuditSecretError,
    FsyncMode,
    JsonlFileSink,
    build_event,
    last_rotated_record,
    load_jsonl,
)

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.jsonl"


class BrokerAudit:
    """Appends broker events to the local chain."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = data_dir / AUDIT_FILE
        records = load_jsonl(path) if path.exists() else []
        self._sink = JsonlFileSink(path, fsync=FsyncMode.INTERVAL, max_bytes=16 * 1024 * 1024)
        self._log = AuditLog.resume(self._sink, records, after=last_rotated_record(path))
        self.path = path

    def record(self, *, now: datetime, spiffe_id: str | None, allowed: bool, reason: str, method: str,
               details: dict[str, Any], serial: str | None = None, jti: str | None = None) -> None:
        """Append one record; a value that looks like a secret is replaced, never written."""
        try:
            event = build_event(now=now, actor="broker", spiffe_id=spiffe_id, selectors=(),
                                decision="allow" if allowed else "deny", reason=reason[:512], method=method,
                                serial=serial, jti=jti, details=details)
        except AuditSecretError:
            safe = {k: v for k, v in details.items() if k in ("upstream", "status", "tokens", "duration_ms")}
            event = build_event(now=now, actor="broker", spiffe_id=spiffe_id, selectors=(),
                                decision="allow" if allowed else "deny", reason="(redacted: looked like a secret)",
                                method=method, details={**safe, "redacted": True})
        self._log.append(event)

    def close(self) -> None:
        """fsync and stop the flusher."""
        self._sink.close()
