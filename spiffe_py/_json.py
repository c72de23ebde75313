"""Strict, bounded JSON decoding for untrusted input (private; callers wrap :class:`JsonError`).

doc = load_object(data, max_bytes=64 * 1024)   # dict; duplicate keys, NaN, deep nesting rejected
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32


class JsonError(ValueError):
    """The bytes were not one acceptable JSON object; the message never contains the data."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonError(f"duplicate json key {key[:64]!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise JsonError(f"json constant {name} is not allowed")


def _depth_ok(text: str) -> bool:
    # Cheap upper bound on nesting (brackets inside strings count too, which only makes it stricter).
    depth = 0
    for char in text:
        if char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


def load_object(data: bytes | str, *, max_bytes: int) -> dict[str, Any]:
    """Decode UTF-8 JSON that must be an object; duplicate keys anywhere are an error."""
    if len(data) > max_bytes:
        raise JsonError(f"json document is larger than {max_bytes} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as err:
        raise JsonError("json document is not utf-8") from err
    if not _depth_ok(text):
        raise JsonError(f"json document is nested deeper than {MAX_DEPTH}")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except JsonError:
        raise
    except ValueError as err:  # JSONDecodeError, or an integer with too many digits
        raise JsonError("invalid json") from err
    if not isinstance(doc, dict):
        raise JsonError("json document is not an object")
    return doc


def dump(doc: dict[str, Any]) -> bytes:
    """Compact, deterministic JSON bytes."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=False).encode()
