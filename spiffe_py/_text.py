"""Make untrusted text safe to print on a terminal (pure).

Operator- and peer-supplied strings (hints, labels, selectors, error messages) may hold ANSI
escape sequences or other control characters that would rewrite what a terminal shows. The
CLIs print them through :func:`printable`, which writes each such character as a visible
escape::

    printable("web\\x1b[2J")                 # 'web\\\\x1b[2J'
    printable("a\\nb", keep_layout=True)   # 'a\\nb' (newlines and tabs the CLI laid out itself)
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the Unicode bidirectional overrides/isolates ("Trojan Source").
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_LAYOUT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_layout: bool = False) -> str:
    """``text`` with every control and bidi-override character escaped (newline and tab kept when asked)."""
    return (_UNSAFE_KEEP_LAYOUT if keep_layout else _UNSAFE).sub(_escape, text)
