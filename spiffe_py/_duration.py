"""One duration syntax for every flag and config key (pure).

Go-style durations (``90s``, ``5m``, ``1h30m``, ``1.5h``, ``250ms``), plus ``d`` for days,
and plain seconds (``90``, ``0.05`` or a TOML number)::

    parse_seconds("1h30m")   # 5400.0
    parse_seconds(90)        # 90.0
"""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|ms|s|m|h|d)")
_PLAIN = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_MAX_TEXT = 64  # longer input is refused before any regex runs

EXAMPLES = "'90s', '5m', '1h30m' or plain seconds"


def parse_seconds(value: object) -> float:
    """``value`` (a duration string or a number of seconds) in seconds; ValueError naming the syntax.

    A ``-`` is accepted on plain seconds only (``-5``), so that callers can say "must be positive".
    """
    if isinstance(value, bool):
        raise ValueError(f"must be a duration such as {EXAMPLES}, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"must be a finite duration, got {value!r}")
        return float(value)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise ValueError(f"must be a duration such as {EXAMPLES}, got {value!r}")
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    signed = text[:1] in ("+", "-")
    body = text[1:] if signed else text
    if _PLAIN.fullmatch(body):
        return sign * float(body)
    if signed:
        raise ValueError(f"must be a duration such as {EXAMPLES}, got {value!r}")
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"must be a duration such as {EXAMPLES}, got {value!r}")
    return total


def parse_whole_seconds(value: object) -> int:
    """:func:`parse_seconds` for settings kept in whole seconds (``1.5s`` is refused, ``1500ms`` is not)."""
    seconds = parse_seconds(value)
    if seconds != int(seconds):
        raise ValueError(f"must be a whole number of seconds, got {value!r}")
    return int(seconds)
