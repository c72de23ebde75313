"""Pure parts of the web console: approval rules, the pending inbox, login tokens and sessions, config."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from spiffe_py._policy import parse_policy
from spiffe_py.clock import ManualClock
from spiffe_server.approvals import (
    SETTLE_GRACE,
    ApprovalRule,
    approval_rules,
    check_approval_ttl,
    denial_of,
    pending_approvals,
)
from spiffe_server.config import ConfigError, ConsoleConfig, parse_config
from spiffe_server.console.auth import LOGIN_TTL, SESSION_TTL, LoginError, LoginRegistry, csrf_ok
from spiffe_server.datastore import ApprovalDecision, AuditRecord
from tests.support.policy_rules import PAYMENTS_REASON, PAYMENTS_RULE

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RULE = "payments-needs-approval"
RULES = {RULE: ApprovalRule(rule=RULE, label="approved", value="true", reason=PAYMENTS_REASON)}


def test_approval_rules_are_deny_rules_that_test_one_label() -> None:
    policy = parse_policy(PAYMENTS_RULE + """
[[rule]]
name = "bracket-form"
when = '!(has(entry.labels.x) && entry.labels["change-ticket"] == "ok")'
effect = "deny"
reason = "needs a change ticket"

[[rule]]
name = "allow-with-label"
when = 'entry.labels.tier == "batch"'
effect = "allow"
reason = "batch"
max_ttl = 60

[[rule]]
name = "no-label"
when = '"admin" in request.audiences'
effect = "deny"
reason = "never"
""", "test")
    rules = approval_rules(policy)
    assert rules == {
        RULE: ApprovalRule(rule=RULE, label="approved", value="true", reason=PAYMENTS_REASON),
        "bracket-form": ApprovalRule(rule="bracket-form", label="change-ticket", value="ok",
                                     reason="needs a change ticket"),
    }


def _forwarded(seq: int, at: datetime, *, entry_id: str = "e1", rule: str = RULE) -> AuditRecord:
    """A deny record as the server stores an agent's forwarded record."""
    inner = {"seq": 7, "time": at.isoformat(), "actor": "agent", "spiffe_id": "spiffe://example.org/bot",
             "decision": "deny", "reason": PAYMENTS_REASON, "method": "FetchJWTSVID",
             "details": {"rule": rule, "entry_id": entry_id, "audiences": ["payments"], "pid": 1, "uid": 0}}
    outer = {"seq": seq, "actor": "spiffe://example.org/spire/agent/a1", "decision": "deny",
             "details": {"forwarded": inner}}
    return AuditRecord(time=at, record=json.dumps(outer), prev_hash="", hash=f"h{seq}",
                       spiffe_id="spiffe://example.org/bot", decision="deny", seq=seq)


def test_denials_by_an_approval_rule_are_pending_until_decided() -> None:
    records = [_forwarded(10, NOW), _forwarded(12, NOW + timedelta(seconds=1)),
               _forwarded(13, NOW, rule="other-rule"), _forwarded(14, NOW, entry_id="e2")]
    items = pending_approvals(map(denial_of, records), [], RULES)
    assert [(p.entry_id, p.count, p.through_seq) for p in items] == [("e2", 1, 14), ("e1", 2, 12)]
    first = items[1]
    assert first.audiences == ("payments",) and first.method == "FetchJWTSVID"
    assert first.label == "approved" and first.value == "true" and first.reason == PAYMENTS_REASON
    assert first.reporter == "spiffe://example.org/spire/agent/a1"

    decided = ApprovalDecision(entry_id="e1", rule=RULE, decision="approved", operator="console:admin",
                               decided_at=NOW + timedelta(seconds=2), through_seq=12)
    assert [p.entry_id for p in pending_approvals(map(denial_of, records), [decided], RULES)] == ["e2"]
    # made before the approval reached the agent (within the grace), forwarded after it: settled
    late = _forwarded(20, decided.decided_at + SETTLE_GRACE)
    assert [p.entry_id for p in pending_approvals(map(denial_of, [*records, late]), [decided], RULES)] == ["e2"]
    # a denial after the approval lapsed is pending again
    again = _forwarded(30, decided.decided_at + SETTLE_GRACE + timedelta(seconds=1))
    items = pending_approvals(map(denial_of, [*records, again]), [decided], RULES)
    assert [(p.entry_id, p.through_seq, p.count) for p in items] == [("e1", 30, 1), ("e2", 14, 1)]


def test_records_that_are_not_denials_by_rule_are_ignored() -> None:
    junk = [AuditRecord(time=NOW, record="not json", prev_hash="", hash="a", seq=1),
            AuditRecord(time=NOW, record=json.dumps({"details": {"rule": RULE}}), prev_hash="", hash="b", seq=2),
            AuditRecord(time=NOW, record=json.dumps([1, 2]), prev_hash="", hash="c", seq=3)]
    assert pending_approvals(map(denial_of, junk), [], RULES) == []


@pytest.mark.parametrize("seconds", [0, -1, 7 * 24 * 3600 + 1])
def test_approval_ttl_is_bounded(seconds: int) -> None:
    with pytest.raises(ValueError, match=r"within 1\.\.604800"):
        check_approval_ttl(seconds)
    assert check_approval_ttl(1) == 1


def test_login_links_work_once_and_expire() -> None:
    clock = ManualClock(NOW)
    logins = LoginRegistry(base_url="http://127.0.0.1:8446", clock=clock)
    url, expires_at = logins.issue("admin", readonly=False)
    assert url.startswith("http://127.0.0.1:8446/login?token=") and expires_at == NOW + LOGIN_TTL
    token = url.split("token=")[1]
    session_id, session = logins.redeem(token)
    assert session.actor == "console:admin" and not session.readonly
    assert logins.session(session_id) == session
    with pytest.raises(LoginError, match="unknown, already used or expired") as info:
        logins.redeem(token)
    assert token not in str(info.value)

    late, _ = logins.issue("auditor", readonly=True)
    clock.advance(LOGIN_TTL)
    with pytest.raises(LoginError):
        logins.redeem(late.split("token=")[1])
    assert logins.session(session_id) is None  # LOGIN_TTL > SESSION_TTL: the session lapsed too
    assert SESSION_TTL < LOGIN_TTL


def test_sessions_end_on_logout_and_refuse_junk_ids() -> None:
    logins = LoginRegistry(base_url="http://x", clock=ManualClock(NOW))
    url, _ = logins.issue("ro", readonly=True)
    session_id, session = logins.redeem(url.split("token=")[1])
    assert session.readonly
    assert logins.session("") is None and logins.session("x" * 129) is None and logins.session("nope") is None
    logins.logout(session_id)
    assert logins.session(session_id) is None
    with pytest.raises(LoginError):
        logins.redeem("")


def test_csrf_comparison() -> None:
    assert csrf_ok("abc", "abc")
    assert not csrf_ok("abc", "abd") and not csrf_ok("abc", None) and not csrf_ok("abc", "")


def test_console_config_defaults_and_refusals() -> None:
    assert parse_config('trust_domain = "example.org"').console is None  # off by default
    cfg = parse_config('trust_domain = "example.org"\n[console]\n').console
    assert cfg == ConsoleConfig(bind_address="127.0.0.1", bind_port=8446, cert_file=None, key_file=None)
    with pytest.raises(ConfigError, match="plain HTTP only on a loopback address"):
        parse_config('trust_domain = "example.org"\n[console]\nbind_address = "0.0.0.0"\n')
    with pytest.raises(ConfigError, match="set both cert_file and key_file"):
        parse_config('trust_domain = "example.org"\n[console]\ncert_file = "/c.pem"\n')
    with pytest.raises(ConfigError, match=r"console\.bogus"):
        parse_config('trust_domain = "example.org"\n[console]\nbogus = 1\n')
    tls = parse_config('trust_domain = "example.org"\n[console]\nbind_address = "0.0.0.0"\n'
                       'cert_file = "/c.pem"\nkey_file = "/k.pem"\n').console
    assert tls is not None and tls.bind_address == "0.0.0.0" and str(tls.key_file) == "/k.pem"
