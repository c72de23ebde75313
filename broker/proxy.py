"""Request pieces of the proxy (pure): header filtering per RFC 9110, the policy document, JSON fields.

::

    out = upstream_headers(request.headers, upstream, secret)    # caller credentials out, key in
    doc = request_document(caller=..., upstream="openai", method="POST", path="/v1/chat/completions", ...)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spiffe_broker.config import Upstream

# RFC 9110 §7.6.1: connection-specific fields, never forwarded (plus any the Connection header names)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authenticate", "proxy-authorization"})
# the caller's own credentials: stripped before forwarding, whatever the upstream's injection header is
CALLER_CREDENTIALS = frozenset({"authorization", "x-api-key", "api-key", "x-goog-api-key", "cookie",
                                "proxy-authorization"})
# recomputed by the HTTP client, or set by the broker
RECOMPUTED = frozenset({"host", "content-length", "accept-encoding", "expect"})
MAX_MODEL_CHARS = 256


def _connection_tokens(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named.update(t.strip().lower() for t in value.split(",") if t.strip())
    return named


def upstream_headers(headers: Iterable[tuple[str, str]], upstream: Upstream, secret: str) -> list[tuple[str, str]]:
    """The request headers for ``upstream``: hop-by-hop and caller credentials removed, the secret injected."""
    items = list(headers)
    drop = HOP_BY_HOP | CALLER_CREDENTIALS | RECOMPUTED | _connection_tokens(items) | {upstream.header}
    out = [(k, v) for k, v in items if k.lower() not in drop]
    out.append(("Accept-Encoding", "identity"))  # the broker reads usage from the response
    out.append((upstream.header, upstream.header_value(secret)))
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers for the caller: hop-by-hop ones and the length (re-framed) removed."""
    items = list(headers)
    drop = HOP_BY_HOP | _connection_tokens(items) | {"content-length", "set-cookie"}
    return [(k, v) for k, v in items if k.lower() not in drop]


@dataclass(frozen=True, slots=True)
class BodyFields:
    """Fields of a JSON request body that policy can see."""

    model: str | None = None
    max_tokens: int | None = None
    stream: bool | None = None
    json: dict[str, Any] | None = None  # the parsed body (for the stream_options rewrite)


def body_fields(body: bytes, content_type: str) -> BodyFields:
    """``model``, ``max_tokens`` (or ``max_completion_tokens``/``max_output_tokens``) and ``stream`` of a JSON body."""
    if not body or "json" not in content_type.lower():
        return BodyFields()
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return BodyFields()
    if not isinstance(doc, dict):
        return BodyFields()
    model = doc.get("model")
    max_tokens = next((doc[k] for k in ("max_tokens", "max_completion_tokens", "max_output_tokens")
                       if isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool)), None)
    stream = doc.get("stream")
    return BodyFields(model=model[:MAX_MODEL_CHARS] if isinstance(model, str) else None, max_tokens=max_tokens,
                      stream=stream if isinstance(stream, bool) else None, json=doc)


def with_stream_usage(fields: BodyFields, path: str) -> bytes | None:
    """A chat-completions streaming body that asks for the final usage chunk, if it does not yet (else None).

    Token budgets need the provider's count; OpenAI-style streams report it only when asked.
    """
    doc = fields.json
    if doc is None or fields.stream is not True or not path.rstrip("/").endswith("chat/completions"):
        return None
    options = doc.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    new = dict(doc)
    new["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(new, separators=(",", ":")).encode()


def request_document(*, now: datetime, caller: str, auth: str, upstream: str, method: str, path: str,
                     fields: BodyFields, usage: Mapping[str, int], kind: str = "proxy",
                     audience: str | None = None, actors: Iterable[str] = ()) -> dict[str, Any]:
    """The CEL input (fields in docs/broker.md): ``request`` and ``time``."""
    now = now.astimezone(UTC)
    request: dict[str, Any] = {"kind": kind, "spiffe_id": caller, "trust_domain": caller.split("/")[2],
                               "auth": auth, "upstream": upstream, "method": method, "path": path,
                               "usage": dict(usage), "actors": list(actors)}
    for name in ("model", "max_tokens", "stream"):
        value = getattr(fields, name)
        if value is not None:
            request[name] = value
    if audience is not None:
        request["audience"] = audience
    return {"request": request, "time": {"now": now, "hour": now.hour, "weekday": (now.weekday() + 1) % 7}}
