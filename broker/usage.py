"""Token usage as providers report it, in a JSON body or a server-sent event stream (pure).

OpenAI: ``usage.total_tokens`` (or prompt + completion), in the body or, streaming, in the last
chunk when ``stream_options.include_usage`` is set (the broker sets it when a token budget
applies). Anthropic: ``usage.input_tokens`` + ``usage.output_tokens`` in the body; streaming,
``message_start.message.usage`` and the cumulative ``message_delta.usage``::

    meter = SseUsage()
    for chunk in stream: meter.feed(chunk)
    meter.tokens
"""

from __future__ import annotations

import json
from typing import Any

MAX_EVENT_LINE = 256 * 1024  # longer data lines are passed through but not parsed


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_of(doc: object) -> tuple[int, int]:
    """(input, output) tokens of one ``usage`` object in either provider's shape."""
    if not isinstance(doc, dict):
        return 0, 0
    if "total_tokens" in doc or "prompt_tokens" in doc:
        prompt, completion = _int(doc.get("prompt_tokens")), _int(doc.get("completion_tokens"))
        total = _int(doc.get("total_tokens"))
        return (prompt, max(completion, total - prompt))
    tokens_in = _int(doc.get("input_tokens")) + _int(doc.get("cache_creation_input_tokens")) \
        + _int(doc.get("cache_read_input_tokens"))
    return tokens_in, _int(doc.get("output_tokens"))


def body_tokens(body: bytes) -> int:
    """Tokens reported in a whole JSON response body (0 when none)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return 0
    return sum(usage_of(doc.get("usage"))) if isinstance(doc, dict) else 0


class SseUsage:
    """Follows a server-sent event stream chunk by chunk and keeps the tokens it reports."""

    def __init__(self) -> None:
        self._buffer = b""
        self._skipping = False  # inside an over-long line
        self._openai = 0
        self._input = 0
        self._output = 0

    @property
    def tokens(self) -> int:
        """Tokens reported so far."""
        return self._openai + self._input + self._output

    def feed(self, chunk: bytes) -> None:
        """Consume the next bytes of the stream."""
        data = self._buffer + chunk
        lines = data.split(b"\n")
        self._buffer = lines.pop()
        for line in lines:
            if self._skipping:
                self._skipping = False
                continue
            self._line(line.rstrip(b"\r"))
        if len(self._buffer) > MAX_EVENT_LINE:
            self._buffer, self._skipping = b"", True

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        payload = line[5:].strip()
        if not payload.startswith(b"{"):
            return  # "[DONE]" and keep-alives
        try:
            event: Any = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(event, dict):
            return
        if isinstance(event.get("usage"), dict) and event.get("type") != "message_delta":
            tin, tout = usage_of(event["usage"])  # an OpenAI chunk (usage is cumulative: the last one counts)
            self._openai = tin + tout
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            tin, tout = usage_of(event["message"].get("usage"))
            self._input, self._output = tin, tout
        elif event.get("type") == "message_delta" and isinstance(event.get("usage"), dict):
            tin, tout = usage_of(event["usage"])  # cumulative output so far
            self._output = max(self._output, tout)
            if tin:
                self._input = max(self._input, tin)
