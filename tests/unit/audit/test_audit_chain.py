"""Tamper-evident audit trail (issue 6): chain verification, secret refusal, JSONL sink."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_py.audit import (
    GENESIS_HASH,
    AuditChainError,
    AuditEvent,
    AuditLog,
    AuditSecretError,
    AuditWriteError,
    BreakKind,
    JsonlFileSink,
    build_event,
    canonical_json,
    load_jsonl,
    parse_jsonl,
    record_hash,
    verify_chain,
)

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def event(i: int, **kw: Any) -> AuditEvent:
    args: dict[str, Any] = {
        "now": NOW + timedelta(seconds=i), "actor": "agent", "spiffe_id": f"spiffe://example.org/w{i}",
        "selectors": ["unix:uid:1000"], "decision": "allow", "reason": "no deny rule matched",
        "method": "FetchJWTSVID", "jti": f"jti-{i}", "details": {"audiences": ["svc"], "n": i},
    }
    args.update(kw)
    return build_event(**args)


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: Any) -> None:
        self.records.append(json.loads(canonical_json(record)))  # a copy, as a file would hold


def chain(n: int) -> list[dict[str, Any]]:
    sink = ListSink()
    log = AuditLog(sink)
    for i in range(n):
        log.append(event(i))
    return sink.records


def rehash(record: dict[str, Any]) -> None:
    record["hash"] = record_hash(record)


def test_untouched_chain_verifies() -> None:
    records = chain(5)
    result = verify_chain(records, head_hash=records[-1]["hash"])
    assert (result.ok, result.count, result.index, result.kind) == (True, 5, None, None)
    assert records[0]["prev_hash"] == GENESIS_HASH
    assert [r["seq"] for r in records] == [0, 1, 2, 3, 4]
    assert all(records[i]["prev_hash"] == records[i - 1]["hash"] for i in range(1, 5))


def test_empty_chain_verifies() -> None:
    assert verify_chain([]).ok


def test_hash_is_sha256_of_canonical_json_including_prev_hash() -> None:
    record = chain(1)[0]
    body = {k: v for k, v in record.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert record["hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert set(record) == {"time", "actor", "spiffe_id", "selectors", "decision", "reason", "method",
                           "serial", "jti", "details", "seq", "prev_hash", "hash"}
    assert record["time"] == "2026-01-01T12:00:00.000000Z"


def test_edited_record_detected_at_its_index() -> None:
    records = chain(5)
    records[2]["decision"] = "deny"
    result = verify_chain(records)
    assert (result.ok, result.index, result.seq, result.kind) == (False, 2, 2, BreakKind.EDITED)
    assert result.reason == "hash does not match the record's content"


def test_edited_and_rehashed_record_breaks_the_next_link() -> None:
    records = chain(5)
    records[2]["reason"] = "nothing to see"
    rehash(records[2])
    result = verify_chain(records)
    assert (result.index, result.kind) == (3, BreakKind.EDITED)
    assert result.reason == "prev_hash does not match record 2: a record was rewritten"


def test_removed_record_detected() -> None:
    records = chain(5)
    del records[1]
    result = verify_chain(records)
    assert (result.index, result.seq, result.kind) == (1, 2, BreakKind.REMOVED)
    assert result.reason == "records with seq 1..1 are missing"


def test_removed_first_record_detected() -> None:
    result = verify_chain(chain(3)[1:])
    assert (result.index, result.seq, result.kind) == (0, 1, BreakKind.REMOVED)


def test_reordered_records_detected() -> None:
    records = chain(5)
    records[1], records[3] = records[3], records[1]
    result = verify_chain(records)
    assert (result.index, result.seq, result.kind) == (1, 3, BreakKind.REORDERED)


def test_replayed_record_detected_as_out_of_order() -> None:
    records = chain(3)
    records.insert(2, dict(records[0]))
    result = verify_chain(records)
    assert (result.index, result.seq, result.kind) == (2, 0, BreakKind.REORDERED)


def test_truncated_tail_detected_with_known_head() -> None:
    records = chain(4)
    head = records[-1]["hash"]
    result = verify_chain(records[:-1], head_hash=head)
    assert (result.ok, result.index, result.kind) == (False, 3, BreakKind.TRUNCATED)


def test_segment_verifies_from_given_anchor() -> None:
    records = chain(4)
    assert verify_chain(records[2:], prev_hash=records[1]["hash"], first_seq=2).ok
    result = verify_chain(records[2:], prev_hash=records[0]["hash"], first_seq=2)
    assert (result.index, result.kind) == (0, BreakKind.EDITED)
    assert result.reason == "prev_hash does not match the expected start of the chain"


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.pop("seq"), "seq is missing or not a non-negative integer"),
        (lambda r: r.update(seq=True), "seq is missing or not a non-negative integer"),
        (lambda r: r.update(hash="ABC"), "hash is missing or not 64 lowercase hex digits"),
        (lambda r: r.pop("prev_hash"), "prev_hash is missing or not 64 lowercase hex digits"),
    ],
)
def test_malformed_record_detected(mutate: Any, reason: str) -> None:
    records = chain(3)
    mutate(records[1])
    result = verify_chain(records)
    assert (result.index, result.kind, result.reason) == (1, BreakKind.MALFORMED, reason)


def test_non_object_record_is_malformed() -> None:
    records: list[Any] = [*chain(2), ["not", "a", "record"]]
    result = verify_chain(records)
    assert (result.index, result.seq, result.kind) == (2, None, BreakKind.MALFORMED)


# --- secrets never reach the trail -------------------------------------------------------------

PEM_KEY = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
JWT = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJzcGlmZmU6Ly9leGFtcGxlLm9yZy93In0.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("overrides", "where", "what"),
    [
        ({"details": {"key": PEM_KEY}}, "details.key", "a private key"),
        ({"reason": f"bad token {JWT}"}, "reason", "a JWT"),
        ({"details": {"tokens": ["ok", JWT]}}, "details.tokens[1]", "a JWT"),
        ({"details": {JWT: 1}}, "a key of details", "a JWT"),
        ({"jti": JWT}, "jti", "a JWT"),
        ({"details": {"nested": {"k": "-----BEGIN RSA PRIVATE KEY-----\nMII"}}}, "details.nested.k", "a private key"),
    ],
)
def test_secrets_are_refused_without_echoing_them(overrides: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(AuditSecretError) as info:
        event(0, **overrides)
    message = str(info.value)
    assert message == f"audit: {where} looks like {what}; refusing to record it"
    assert JWT not in message
    assert "BEGIN" not in message


def test_public_certificates_and_ids_are_accepted() -> None:
    e = event(0, details={"cert": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "kid": "a.b.c"})
    assert e.details["kid"] == "a.b.c"


def test_non_json_details_refused() -> None:
    with pytest.raises(TypeError, match=r"audit: details.raw has non-JSON type bytes"):
        event(0, details={"raw": b"\x00"})
    with pytest.raises(ValueError, match=r"audit: details.x is not a finite number"):
        event(0, details={"x": float("nan")})
    with pytest.raises(ValueError, match="details larger than"):
        event(0, details={"x": "a" * 20000})
    with pytest.raises(ValueError, match="'maybe' is not a valid Outcome"):
        event(0, decision="maybe")


def test_non_string_details_keys_refused_although_json_would_coerce_them() -> None:
    with pytest.raises(TypeError, match=r"audit: details.nested keys must be strings"):
        event(0, details={"nested": {1: "x"}})


def test_escape_that_only_looks_like_a_jwt_in_the_json_text_is_accepted() -> None:
    """The one-pass check over the JSON text may hit on escapes; the per-field walk decides."""
    reason = "\x1eyJhbGci.eyJzdWIi.c2ln"  # serialised as \u001eyJ...: a JWT shape only in the text
    assert event(0, reason=reason).reason == reason


def test_secret_split_by_a_control_character_is_not_a_jwt_either_way() -> None:
    assert event(0, reason="eyJhbGci\x01.eyJzdWIi.c2ln").reason.startswith("eyJ")


# --- the JSONL sink ------------------------------------------------------------------------------


def test_jsonl_sink_appends_and_resumes_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(JsonlFileSink(path))
    for i in range(3):
        log.append(event(i))
    assert path.stat().st_mode & 0o777 == 0o600
    records = load_jsonl(path)
    resumed = AuditLog.resume(JsonlFileSink(path), records)
    assert resumed.head == (3, records[-1]["hash"])
    resumed.append(event(3))
    all_records = load_jsonl(path)
    assert len(all_records) == 4
    assert verify_chain(all_records).ok
    # each line is exactly the canonical encoding
    first_line = path.read_bytes().splitlines()[0]
    assert first_line == canonical_json(all_records[0])


def test_resume_refuses_a_broken_chain_and_starts_fresh_on_empty() -> None:
    records = chain(3)
    del records[1]
    with pytest.raises(AuditChainError, match=r"audit: chain broken at index 1 \(removed\)") as info:
        AuditLog.resume(ListSink(), records)
    assert info.value.result.seq == 2
    assert AuditLog.resume(ListSink(), []).head == (0, GENESIS_HASH)


def test_jsonl_file_edit_detected(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(JsonlFileSink(path))
    for i in range(4):
        log.append(event(i, decision="deny" if i == 2 else "allow"))
    path.write_text(path.read_text().replace('"decision":"deny"', '"decision":"allow"'))
    result = verify_chain(load_jsonl(path))
    assert (result.index, result.kind) == (2, BreakKind.EDITED)


def test_full_disk_raises_and_calls_hook_without_advancing() -> None:
    """/dev/full fails every write with ENOSPC, like a full disk."""
    errors: list[OSError] = []
    log = AuditLog(JsonlFileSink(Path("/dev/full"), on_error=errors.append))
    with pytest.raises(AuditWriteError, match=r"audit: cannot write to '/dev/full': No space left on device"):
        log.append(event(0))
    assert len(errors) == 1
    assert errors[0].errno == 28
    assert log.head == (0, GENESIS_HASH)


def test_unwritable_path_raises(tmp_path: Path) -> None:
    with pytest.raises(AuditWriteError, match="Is a directory") as info:
        JsonlFileSink(tmp_path).write({"seq": 0})
    assert isinstance(info.value, OSError)


def test_parse_jsonl_rejects_non_objects() -> None:
    assert parse_jsonl('{"a":1}\n\n{"b":2}\n') == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValueError, match="audit: line 2 is not a JSON object"):
        parse_jsonl('{"a":1}\n[1]\n')
