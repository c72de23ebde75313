"""AuditLog serialises each record once: the hashed text and the JSONL line are the canonical forms.

The line AuditLog hands to JsonlFileSink must be byte for byte ``canonical_json(record) + b"\\n"``
(what ``JsonlFileSink.write(record)`` writes) and the hash must be ``record_hash(record)``, for
records whose nested details reuse the top-level key names, with unicode, nulls and large values.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from spiffe_py.audit import (
    MAX_DETAILS_BYTES,
    AuditLog,
    FsyncMode,
    JsonlFileSink,
    _json_string,
    _render,
    build_event,
    canonical_json,
    format_time,
    load_jsonl,
    record_hash,
    seal_record,
    seal_record_text,
    verify_chain,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

DETAILS: list[dict[str, Any]] = [
    {},
    {"rule": None, "pid": 7, "uid": 0, "entry_id": "e1", "audiences": ["a", "b"]},
    # nested keys named like the record's own fields, in every position
    {"jti": "x", "hash": "y", "seq": 1, "prev_hash": "z", "nested": {"jti": {"seq": [{"hash": None}]}}},
    {"ünïcode": "ç'\"\\\n\t\u2028", "emoji": "\U0001f600", "float": 1.5, "neg": -3, "bool": True},
    {"big": "x" * 4000},
]


def _event(details: dict[str, Any], **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "now": NOW, "actor": "agent", "spiffe_id": "spiffe://example.org/w", "selectors": ["unix:uid:0", "b:ü"],
        "decision": "allow", "reason": "no policy", "method": "FetchJWTSVID", "jti": "0123abcd", "details": details,
    }
    fields.update(overrides)
    return build_event(**fields)


@pytest.mark.parametrize("details", DETAILS)
@pytest.mark.parametrize("overrides", [{}, {"spiffe_id": None, "jti": None, "serial": "ff01", "decision": "deny"}])
def test_the_written_line_is_the_canonical_record_and_the_hash_its_canonical_text(
    tmp_path: Path, details: dict[str, Any], overrides: dict[str, Any]
) -> None:
    path = tmp_path / "audit.jsonl"
    sink = JsonlFileSink(path, fsync=FsyncMode.INTERVAL, flush_interval=60)
    log = AuditLog(sink)
    records = [log.append(_event(details, **overrides)) for _ in range(2)]
    sink.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert lines == [canonical_json(r) + b"\n" for r in records]
    assert [r["hash"] for r in records] == [record_hash(r) for r in records]
    assert records[0] == seal_record(_event(details, **overrides), seq=0, prev_hash=records[0]["prev_hash"])
    sealed, text = seal_record_text(_event(details, **overrides), seq=1, prev_hash=records[0]["hash"])
    assert sealed == records[1] and text.encode() == canonical_json(records[1])
    assert verify_chain(load_jsonl(path)).ok


def test_details_size_limit_still_applies_to_the_details_alone() -> None:
    fits = {"k": "x" * (MAX_DETAILS_BYTES - 16)}  # the whole record is over the limit, the details are not
    assert len(canonical_json(_event(fits).to_dict())) > MAX_DETAILS_BYTES
    with pytest.raises(ValueError, match="details larger than"):
        _event({"k": "x" * MAX_DETAILS_BYTES})
    with pytest.raises(ValueError, match="details larger than"):
        _event({"k": "é" * (MAX_DETAILS_BYTES // 2)})  # counted in UTF-8 bytes, not characters


def test_format_time_is_rfc3339_utc_with_microseconds() -> None:
    assert format_time(NOW) == "2026-01-01T12:00:00.000000Z"
    east = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=5)))
    assert format_time(east) == "2026-01-01T07:00:00.000005Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))


@pytest.mark.parametrize("details", DETAILS)
@pytest.mark.parametrize("overrides", [{}, {"spiffe_id": None, "jti": None, "serial": "ff01", "decision": "deny",
                                             "reason": "quote \" and \\ and \u2028", "selectors": []}])
def test_an_event_restamped_with_at_seals_like_a_freshly_built_one(
    tmp_path: Path, details: dict[str, Any], overrides: dict[str, Any]
) -> None:
    """at() reuses the serialised pieces of the event; the record, its text and its hash stay canonical."""
    base = _event(details, **overrides)
    later = NOW + timedelta(seconds=3, microseconds=7)
    again = base.at(later).at(later + timedelta(seconds=1))  # the pieces carry over through copies
    assert again == _event(details, **{**overrides, "now": later + timedelta(seconds=1)})
    for seq, prev in ((0, "0" * 64), (12345678901, "ab" * 32)):
        fresh, fresh_text = seal_record_text(_event(details, **{**overrides, "now": later + timedelta(seconds=1)}),
                                             seq=seq, prev_hash=prev)
        sealed, text = seal_record_text(again, seq=seq, prev_hash=prev)
        assert (sealed, text) == (fresh, fresh_text)
        assert text.encode() == canonical_json(sealed) and sealed["hash"] == record_hash(sealed)
        assert list(sealed) == list(fresh)  # the same key order as a record built field by field


@pytest.mark.parametrize("details", DETAILS)
def test_build_event_takes_the_head_from_its_check_text_and_seals_canonically(details: dict[str, Any]) -> None:
    """build_event's pieces come from the text it checked; they equal a fresh rendering of the same event."""
    built = _event(details, reason="r \u2028 \"q\"", serial="ff")
    assert built._pieces is not None and built._pieces == _render(built)
    sealed, text = seal_record_text(built, seq=3, prev_hash="cd" * 32)
    assert text.encode() == canonical_json(sealed) and sealed["hash"] == record_hash(sealed)


@pytest.mark.parametrize("details", DETAILS)
def test_write_at_writes_the_line_append_of_the_restamped_event_writes(tmp_path: Path, details: dict[str, Any]) -> None:
    """AuditLog.write(event, at=t) (no record dict, no event copy) == append(event.at(t)), and the chain verifies."""
    event = _event(details)
    times = [NOW + timedelta(seconds=i, microseconds=i) for i in range(3)]
    fast, slow = JsonlFileSink(tmp_path / "fast.jsonl"), JsonlFileSink(tmp_path / "slow.jsonl")
    fast_log, slow_log = AuditLog(fast), AuditLog(slow)
    for t in times:
        fast_log.write(event, at=t)
        slow_log.append(event.at(t))
    fast_log.write(event)  # without at: the event's own time
    slow_log.append(event)
    fast.close()
    slow.close()
    assert (tmp_path / "fast.jsonl").read_bytes() == (tmp_path / "slow.jsonl").read_bytes()
    assert fast_log.head == slow_log.head
    records = load_jsonl(tmp_path / "fast.jsonl")
    assert [r["time"] for r in records] == [format_time(t) for t in times] + [format_time(NOW)]
    assert verify_chain(records).ok


@pytest.mark.parametrize("value", ["abc", "", "é \u2028 \" \\ \n \x00 \x7f", "\U0001f600", "x" * 300])
def test_the_string_encoder_used_for_time_and_prev_hash_is_the_canonical_one(value: str) -> None:
    assert _json_string(value) == canonical_json(value).decode()
