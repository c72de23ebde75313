"""Structured logging (text or JSON) with a redaction filter for keys and tokens.

::

    configure_logging(level="info", fmt="json")
    logging.getLogger("spiffe_server").info("entry created", extra={"entry_id": eid})

The formats, filters and level names are shared with the agent (``spiffe_py._serving.logs``),
so both write the same lines with the same keys.
"""

from __future__ import annotations

from spiffe_py._serving.logs import (
    REDACTED,
    JsonFormatter,
    RedactionFilter,
    TextFormatter,
    configure_logging,
    redact,
)

__all__ = ["REDACTED", "JsonFormatter", "RedactionFilter", "TextFormatter", "configure_logging", "redact"]
