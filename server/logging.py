"""Structured logging (text or JSON) with a redaction filter for keys and tokens.

::

    configure_logging(level="info", fmt="json")
    logging.getLogger("spiffe_server").info("entry created", extra={"entry_id": eid})

Repeated warnings and errors are collapsed (``spiffe_py._serving.logs.RepeatFilter``), and
anything that looks like a PEM block, a JWT or a join-token agent path is replaced by
``[REDACTED]`` before a record is written, whatever the caller passed.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from spiffe_py._serving.logs import RepeatFilter

REDACTED = "[REDACTED]"
_PATTERNS = (
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.S),
    re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),  # JWS compact form
    re.compile(r"(?<=/spire/agent/join_token/)[A-Za-z0-9._-]+"),  # the token is the last segment
)
# LogRecord attributes that are not user "extra" fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


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


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
            **{k: v if isinstance(v, str | int | float | bool) or v is None else str(v)
               for k, v in _extras(record).items()},
        }
        if record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc)


class TextFormatter(logging.Formatter):
    """``time level logger: msg key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in _extras(record).items())
        line = f"{when} {record.levelname.lower()} {record.name}: {record.getMessage()}"
        line += f" {fields}" if fields else ""
        return line + (f"\n{record.exc_text}" if record.exc_text else "")


def configure_logging(*, level: str, fmt: str) -> None:
    """Send all records through the repeat and redaction filters to stderr in ``fmt`` (text|json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFilter())  # a flood of one warning (EMFILE, refused peers): one line per 10 s
    handler.addFilter(RedactionFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
