"""Pretty output for people: RFC 3339 and relative times, Go-style durations, aligned fields (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spiffe_py._cli import duration, expired, fields, json_scalar, when

NOW = datetime(2026, 12, 7, 5, 0, 0, tzinfo=UTC)
T = int(NOW.timestamp())


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (90, "1m30s"), (3600, "1h"), (5400, "1h30m"),
                                               (86400, "24h"), (3661, "1h1m1s"), (-60, "-1m")])
def test_durations_are_go_style(seconds: int, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("unix", "expiry", "text"), [
    (T + 3540, True, "2026-12-07T05:59:00Z (in 59m)"),
    (T - 3 * 3600, True, "2026-12-07T02:00:00Z (expired 3h ago)"),
    (T - 2 * 86400, False, "2026-12-05T05:00:00Z (2d ago)"),
    (T + 30, False, "2026-12-07T05:00:30Z (in 30s)"),
    (0, True, "-"),
])
def test_times_are_rfc3339_and_relative(unix: int, expiry: bool, text: str) -> None:
    assert when(unix, now=NOW, expiry=expiry) == text


def test_expired_is_at_or_after_not_after() -> None:
    assert expired(T, now=NOW) and expired(T - 1, now=NOW)
    assert not expired(T + 1, now=NOW) and not expired(0, now=NOW)


def test_fields_align_and_escape() -> None:
    text = fields([("SPIFFE ID", "spiffe://example.org/web"), ("Selectors", ["unix:uid:1", "unix:gid:2"]),
                   ("Hint", "a\x1b[2Jb"), ("Labels", [])])
    assert text.splitlines() == [
        "SPIFFE ID : spiffe://example.org/web",
        "Selectors : unix:uid:1",
        "            unix:gid:2",
        "Hint      : a\\x1b[2Jb",
        "Labels    : -",
    ]


@pytest.mark.parametrize(("value", "text"), [("s", "s"), (1796599082.0, "1796599082"), (1.5, "1.5"), (True, "true"),
                                             (None, "null"), ({"b": 1, "a": [2]}, '{"a":[2],"b":1}')])
def test_no_python_reprs(value: object, text: str) -> None:
    assert json_scalar(value) == text
