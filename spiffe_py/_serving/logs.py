"""Log formats and filters shared by spiffe-server and spiffe-agent: text or JSON, redaction, flood control.

::

    configure_logging(level="warn", fmt="json")     # both binaries; "warn" is "warning"
    logging.getLogger("spiffe_agent").info("renewed", extra={"spiffe_id": sid})

Both formats carry the same fields: ``time`` (RFC 3339, UTC), ``level`` (lower case),
``logger``, ``msg``, the record's extra fields, and ``exception`` when there is one. Text is
``time level logger: msg key=value ...``; JSON is one object per line with those keys.

Anything that looks like a PEM block, a JWT or a join-token agent path is replaced by
``[REDACTED]`` before a record is written, whatever the caller passed.

Repeated warnings and errors are collapsed into one line per interval with a suppressed count.
An attacker who can make the process fail the same way thousands of times a second (accept()
hitting EMFILE, refused connections, failed handshakes) must not be able to fill the disk with
identical tracebacks. Records of WARNING and above are grouped by logger, level, the first line
of the message template and the exception type; the first of a group passes, the rest are
dropped until ``interval`` seconds (by the records' own timestamps) have passed, and the next
one that passes says how many were dropped::

    handler.addFilter(RepeatFilter(interval=10.0))   # before filters that rewrite record.msg
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

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


# -- formats ------------------------------------------------------------------------------

LOG_LEVELS = ("debug", "info", "warning", "warn", "error")  # "warn" is SPIRE's spelling of "warning"
LOG_FORMATS = ("text", "json")
# third-party loggers that log per frame or per header at debug (hpack: every header of every
# request): kept at WARNING whatever the level, so debug stays readable
QUIET_LOGGERS = ("hpack", "h2")

REDACTED = "[REDACTED]"
_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.S),
    re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWS compact form
    re.compile(r"(?<=/spire/agent/join_token/)[A-Za-z0-9._-]+"),  # the token is the last segment
)
# LogRecord attributes that are not user "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def normalize_level(level: str) -> str:
    """``level`` as the logging module names it (``warn`` -> ``WARNING``); ValueError if unknown."""
    name = level.strip().lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}: {level[:50]!r}")
    return "WARNING" if name == "warn" else name.upper()


def redact(text: str) -> str:
    """``text`` with every secret-looking span replaced."""
    for pattern in _PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class RedactionFilter(logging.Filter):
    """Rewrites the message, its arguments and extra fields of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record), "level": record.levelname.lower(), "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            if key not in doc:  # the fixed keys are stable: an extra never overrides them
                doc[key] = value if isinstance(value, str | int | float | bool) or value is None else str(value)
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc)


class TextFormatter(logging.Formatter):
    """``time level logger: msg key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in _extras(record).items())
        line = f"{_timestamp(record)} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        line += f" {fields}" if fields else ""
        return line + (f"\n{record.exc_text}" if record.exc_text else "")


def configure_logging(*, level: str, fmt: str, stream: TextIO | None = None) -> None:
    """Send all records through the repeat and redaction filters to ``stream`` (stderr) in ``fmt`` (text|json)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}: {fmt[:50]!r}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(RepeatFilter())  # a flood of one warning (EMFILE, refused peers): one line per 10 s
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(normalize_level(level))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
