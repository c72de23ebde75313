"""Old audit records keep verifying byte for byte when the record format grows a field.

``fixtures/sealed_chain.jsonl`` was sealed by the code of the first release of this format. The
record's field list lives in one place (``AuditEvent.to_dict``); sealing, hashing and storing
all derive from it, so a field added there is hashed and stored alike, and old records, which
lack it, still verify from their own keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spiffe_py.audit import (
    AuditEvent,
    AuditLog,
    JsonlFileSink,
    build_event,
    canonical_json,
    load_jsonl,
    record_hash,
    verify_chain,
)

FIXTURE = Path(__file__).parent / "fixtures" / "sealed_chain.jsonl"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def fixture_events() -> Iterator[tuple[AuditEvent, datetime | None]]:
    """The events the fixture was sealed from, each with the time ``AuditLog.write`` stamped (None: append)."""
    details: list[dict[str, Any]] = [
        {},
        {"rule": None, "pid": 7, "audiences": ["a", "b"], "ttl": 300},
        {"jti": "x", "hash": "y", "seq": 1, "prev_hash": "z", "nested": {"time": {"seq": [{"hash": None}]}}},
        {"ünïcode": "ç'\"\\\n\t\u2028", "emoji": "\U0001f600", "float": 1.5, "neg": -3, "bool": True},
    ]
    for i, extra in enumerate(details):
        event = build_event(now=NOW + timedelta(seconds=i), actor="agent", spiffe_id=f"spiffe://example.org/w{i}",
                            selectors=["unix:uid:0", "b:ü"], decision="allow" if i % 2 else "deny",
                            reason=f"reason {i}", method="FetchJWTSVID", jti=f"j{i}", details=extra)
        yield event, None
        yield event, NOW + timedelta(minutes=i)  # the hot path: the same event, stamped anew
    yield build_event(now=NOW, actor="server", spiffe_id=None, selectors=(), decision="deny", reason="",
                      method="MintX509SVID", serial="0a1b"), None


def seal_fixture(path: Path) -> None:
    """Seal :func:`fixture_events` into ``path`` (how the fixture file was made)."""
    sink = JsonlFileSink(path)
    log = AuditLog(sink)
    for event, at in fixture_events():
        log.write(event, at=at)
    sink.close()


def test_the_stored_fixture_still_verifies() -> None:
    records = load_jsonl(FIXTURE)
    assert len(records) == 9
    assert verify_chain(records).ok


def test_sealing_the_fixture_events_today_gives_the_same_bytes(tmp_path: Path) -> None:
    seal_fixture(tmp_path / "again.jsonl")
    assert (tmp_path / "again.jsonl").read_bytes() == FIXTURE.read_bytes()


@pytest.mark.parametrize("name", ["actor_zone", "zone", "aaa", "zzz", "hash_alg", "serial_kind"])
def test_a_field_added_to_the_record_is_hashed_and_stored_and_old_records_still_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    plain = AuditEvent.to_dict

    def with_field(self: AuditEvent) -> dict[str, Any]:
        return {**plain(self), name: {"added": self.method}}

    monkeypatch.setattr(AuditEvent, "to_dict", with_field)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(FIXTURE.read_bytes())
    sink = JsonlFileSink(path)
    log = AuditLog.resume(sink, load_jsonl(path))  # the old records verify with the new code
    for event, at in fixture_events():
        record = log.append(event if at is None else event.at(at))
        assert record[name] == {"added": event.method}
        assert record_hash(record) == record["hash"]
        log.write(event, at=at)
    sink.close()
    lines = path.read_bytes().splitlines(keepends=True)
    records = load_jsonl(path)
    assert verify_chain(records).ok
    assert b"".join(lines[:9]) == FIXTURE.read_bytes()
    for line, record in zip(lines[9:], records[9:], strict=True):
        assert record[name] == {"added": record["method"]}
        assert line == canonical_json(record) + b"\n"
    # dropping the new field from a new record breaks its hash: the field is covered by it
    edited = dict(records[9])
    del edited[name]
    assert record_hash(edited) != edited["hash"]
