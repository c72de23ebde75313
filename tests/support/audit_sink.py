"""An in-memory audit sink and agent-side audit lines for the central-audit tests (issue 6).

Usage::

    from tests.support.audit_sink import sealed_lines

    lines = sealed_lines(build_event(...) for i in range(3))   # what an agent would forward
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from spiffe_py.audit import AuditEvent, AuditLog, canonical_json

__all__ = ["LineSink", "sealed_lines"]


class LineSink:
    """An :class:`spiffe_py.audit.AuditSink` that keeps each record as its canonical JSON line."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, record: Mapping[str, Any]) -> None:
        self.lines.append(canonical_json(record).decode())


def sealed_lines(events: Iterable[AuditEvent]) -> list[str]:
    """Seal ``events`` into a fresh chain (seq 0 on) and return its lines, as an agent's JSONL file holds them."""
    sink = LineSink()
    log = AuditLog(sink)
    for event in events:
        log.append(event)
    return sink.lines
