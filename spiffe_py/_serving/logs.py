"""Collapse floods of repeated warnings and errors into one line per interval with a suppressed count.

An attacker who can make the process fail the same way thousands of times a second (accept()
hitting EMFILE, refused connections, failed handshakes) must not be able to fill the disk with
identical tracebacks. Records of WARNING and above are grouped by logger, level, the first line
of the message template and the exception type; the first of a group passes, the rest are
dropped until ``interval`` seconds (by the records' own timestamps) have passed, and the next
one that passes says how many were dropped::

    handler.addFilter(RepeatFilter(interval=10.0))   # before filters that rewrite record.msg
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spiffe_py._serving.buckets import LruDict

DEFAULT_REPEAT_INTERVAL = 10.0
_MAX_GROUPS = 1024
_KEY_CHARS = 200


@dataclass(slots=True)
class _Group:
    since: float  # when the last record of this group was let through
    suppressed: int = 0


def _key(record: logging.LogRecord) -> tuple[str, int, str, str]:
    first_line = str(record.msg).split("\n", 1)[0][:_KEY_CHARS]
    exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] is not None else ""
    return record.name, record.levelno, first_line, exc_type


class RepeatFilter(logging.Filter):
    """Passes at most one record per group and ``interval``; DEBUG and INFO records always pass."""

    def __init__(self, interval: float = DEFAULT_REPEAT_INTERVAL) -> None:
        super().__init__()
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        self._interval = interval
        self._groups: LruDict[tuple[str, int, str, str], _Group] = LruDict(_MAX_GROUPS)

    def filter(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is written; a passing record after a quiet spell carries the dropped count."""
        if record.levelno < logging.WARNING:
            return True
        key = _key(record)
        group = self._groups.get_or_create(key, lambda: _Group(since=record.created - self._interval))
        if record.created - group.since < self._interval:
            group.suppressed += 1
            return False
        if group.suppressed:
            record.msg = f"{record.msg} [{group.suppressed} similar messages suppressed]"
        group.since, group.suppressed = record.created, 0
        return True
