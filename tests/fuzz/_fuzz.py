"""Shared pieces of the fuzzing suite: the time-boxed hypothesis settings and the one property.

Every fuzz test states the same property about a parser of untrusted input: it returns a value of
the expected type or raises one of its documented error types, and nothing else (a ValueError,
KeyError, IndexError, UnicodeDecodeError, ... escaping where a documented error is expected is a
finding)::

    outcome = attempt(SpiffeId.parse, text)
    assert_outcome(outcome, SpiffeId, InvalidSpiffeIdError)
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# The whole suite must stay within ~90 s on a shared 2-core box: cheap text parsers get more
# examples than the ones that parse or verify X.509. No example database: runs are reproducible
# from the printed falsifying example, and nothing is written into the work tree.
_COMMON: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
# SPIFFE_PY_FUZZ_SCALE=10 multiplies every budget, for a longer run by hand.
_SCALE = max(1, int(os.environ.get("SPIFFE_PY_FUZZ_SCALE", "1")))
CHEAP = settings(max_examples=100 * _SCALE, **_COMMON)
MEDIUM = settings(max_examples=50 * _SCALE, **_COMMON)
COSTLY = settings(max_examples=25 * _SCALE, **_COMMON)


class _Raised:
    """What :func:`attempt` returns when the call raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def attempt(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, or a :class:`_Raised` holding whatever it raised (BaseException too)."""
    try:
        return fn(*args, **kwargs)
    except BaseException as err:  # a parser must not even raise RecursionError/SystemExit-like errors
        return _Raised(err)


def assert_outcome(outcome: Any, expected: type | tuple[type, ...], documented: type | tuple[type, ...]) -> None:
    """The property: a value of ``expected`` type, or an exception of a ``documented`` type."""
    if isinstance(outcome, _Raised):
        if not isinstance(outcome.error, documented):
            raise AssertionError(
                f"undocumented {type(outcome.error).__name__}: {outcome.error!s:.300}"
            ) from outcome.error
        return
    assert isinstance(outcome, expected), f"unexpected result type {type(outcome).__name__}"


def b64url(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# JSON values: scalars of every JSON type (big ints, floats, odd unicode) nested a few levels.
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def json_bytes(doc: object) -> bytes:
    """Compact JSON encoding of ``doc``."""
    return json.dumps(doc, separators=(",", ":")).encode()


def mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any], max_edits: int = 4) -> bytes:
    """``data`` with a few byte flips, truncations, deletions or insertions chosen by ``draw``."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        if not out:
            break
        op = draw(st.sampled_from(["flip", "set", "truncate", "delete", "insert"]))
        pos = draw(st.integers(0, len(out) - 1))
        if op == "flip":
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            out[pos] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0x81, 0x82, 0xFF, 0x30, 0x04, 0x05, 0xA0]))
        elif op == "truncate":
            del out[pos:]
        elif op == "delete":
            del out[pos : pos + draw(st.integers(1, 8))]
        else:
            out[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(out)
