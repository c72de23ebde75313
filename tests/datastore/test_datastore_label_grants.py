"""Label grants (labels set until an expiry), approval decisions and the newest-first audit listing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from spiffe_server.datastore import (
    ApprovalDecision,
    AuditFilter,
    AuditRecord,
    InvalidArgumentError,
    LabelGrant,
    SqlDataStore,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _grant(entry_id: str, key: str, seconds: int, value: str = "true") -> LabelGrant:
    return LabelGrant(entry_id=entry_id, key=key, value=value, expires_at=NOW + timedelta(seconds=seconds),
                      granted_by="console:admin")


def test_label_grants_come_due_in_expiry_order(store: SqlDataStore) -> None:
    store.grant_label(_grant("e1", "approved", 30))
    store.grant_label(_grant("e2", "approved", 10))
    store.grant_label(_grant("e1", "ticket", 20, "ok"))
    assert store.due_label_grants(now=NOW) == ()
    assert [g.entry_id for g in store.due_label_grants(now=NOW + timedelta(seconds=20))] == ["e2", "e1"]
    # a new grant for the same label replaces the old one
    store.grant_label(_grant("e2", "approved", 100))
    assert [(g.entry_id, g.key) for g in store.due_label_grants(now=NOW + timedelta(seconds=30))] == \
        [("e1", "ticket"), ("e1", "approved")]
    store.delete_label_grant("e1", "ticket")
    store.delete_label_grant("e1", "nothing")  # absent is fine
    assert [(g.entry_id, g.key, g.expires_at) for g in store.list_label_grants()] == [
        ("e1", "approved", NOW + timedelta(seconds=30)), ("e2", "approved", NOW + timedelta(seconds=100))]


def test_approval_decisions_one_per_entry_and_rule(store: SqlDataStore) -> None:
    first = ApprovalDecision(entry_id="e1", rule="r", decision="approved", operator="console:a", decided_at=NOW,
                             through_seq=4)
    store.record_approval_decision(first)
    later = ApprovalDecision(entry_id="e1", rule="r", decision="rejected", operator="console:b",
                             decided_at=NOW + timedelta(seconds=1), through_seq=9)
    store.record_approval_decision(later)
    store.record_approval_decision(ApprovalDecision(entry_id="e2", rule="r", decision="approved",
                                                    operator="uid:0", decided_at=NOW, through_seq=1))
    assert [d.entry_id for d in store.list_approval_decisions()] == ["e1", "e2"]
    assert store.list_approval_decisions()[0] == later
    with pytest.raises(InvalidArgumentError, match="decision"):
        ApprovalDecision(entry_id="e", rule="r", decision="maybe", operator="o", decided_at=NOW, through_seq=0)


def test_recent_audit_is_newest_first_and_filtered(store: SqlDataStore) -> None:
    prev = ""
    for n in range(1, 8):
        record = AuditRecord(time=NOW + timedelta(seconds=n), record=f'{{"n":{n}}}', prev_hash=prev, hash=f"h{n}",
                             spiffe_id="spiffe://example.org/w", decision="deny" if n % 2 else "allow")
        prev = store.append_audit(record).hash
    assert [r.seq for r in store.list_audit_recent(limit=3)] == [7, 6, 5]
    denials = store.list_audit_recent(AuditFilter(decision="deny", since=NOW + timedelta(seconds=3)), limit=10)
    assert [r.seq for r in denials] == [7, 5, 3]
    with pytest.raises(InvalidArgumentError, match="limit"):
        store.list_audit_recent(limit=0)


def _sealed_like(method: str, decision: str, **details: object) -> str:
    """A record text shaped like a sealed one (canonical JSON) for the fields the counts read."""
    return json.dumps({"decision": decision, "details": details, "method": method}, sort_keys=True,
                      separators=(",", ":"))


def test_audit_counts_by_minute_count_each_record_once(store: SqlDataStore) -> None:
    texts = [_sealed_like("NewJWTSVID", "deny"), _sealed_like("BatchNewX509SVID", "allow", items=3),
             _sealed_like("NewJWTSVID", "allow"), _sealed_like("FetchJWTSVID", "deny", forwarded={"seq": 1}),
             _sealed_like("FetchJWTSVID", "deny", forwarded={"seq": 2}), _sealed_like("NewJWTSVID", "allow")]
    prev = ""
    for n, text in enumerate(texts):  # minutes 0, 0, 1, 1, 2, 2
        record = AuditRecord(time=NOW + timedelta(seconds=30 * n), record=text, prev_hash=prev,
                             hash=f"h{n}", decision=json.loads(text)["decision"])
        prev = store.append_audit(record).hash
    counts, head = store.audit_counts_by_minute(since=NOW + timedelta(minutes=1))
    assert head == 6
    one, two = NOW + timedelta(minutes=1), NOW + timedelta(minutes=2)
    assert sorted(counts) == [(one, "allow", "NewJWTSVID", False, 1), (one, "deny", "FetchJWTSVID", True, 1),
                              (two, "allow", "NewJWTSVID", False, 1), (two, "deny", "FetchJWTSVID", True, 1)]
    assert sorted(store.audit_counts_by_minute(since=NOW)[0])[:2] == [
        (NOW, "allow", "BatchNewX509SVID", False, 3), (NOW, "deny", "NewJWTSVID", False, 1)]  # items counted
    assert store.audit_counts_by_minute(since=NOW, after_seq=head) == ((), 6)
    store.append_audit(AuditRecord(time=NOW, record=_sealed_like("LabelExpired", "allow"), prev_hash=prev,
                                   hash="h6", decision="allow"))
    assert store.audit_counts_by_minute(since=NOW, after_seq=head) == (((NOW, "allow", "LabelExpired", False, 1),), 7)
