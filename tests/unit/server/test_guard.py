"""Unit tests of server.guard: decisions, TTL caps, quarantine, label patches and batch records (issue 6)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from spiffe_py._policy import Decision, Method, parse_policy
from spiffe_py.clock import ManualClock
from spiffe_py.errors import AuthorizationError
from spiffe_py.selectors import Selector
from spiffe_server.audit import CentralAudit, verify_store
from spiffe_server.datastore import DataStore, Issuance, RegistrationEntry, open_datastore
from spiffe_server.guard import (
    QUARANTINE_REASON_LABEL,
    Guard,
    MintRequest,
    capped_ttl,
    decide,
    keep_quarantine,
    load_holder,
    patch_entry,
    policy_document,
)
from spiffe_server.revocation import x509_issuance

NOW = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)
SID = "spiffe://example.org/pay"

SHORT_RULE = '''
[[rule]]
name = "short"
when = 'has(entry.labels.short)'
effect = "allow"
reason = "short-lived"
max_ttl = 60
'''

POLICY = parse_policy('''
[[rule]]
name = "payments-needs-approval"
when = '"payments" in request.audiences && !(has(entry.labels.approved) && entry.labels.approved == "true")'
effect = "deny"
reason = "payments needs approval"
''' + SHORT_RULE + '''
[[rule]]
name = "shorter"
when = 'has(entry.labels.shorter)'
effect = "allow"
reason = "shorter-lived"
max_ttl = 30
''', "test.toml")


def entry(eid: str = "e1", **kw: object) -> RegistrationEntry:
    fields: dict[str, object] = {"spiffe_id": SID, "parent_id": "spiffe://example.org/node", "id": eid,
                                 "selectors": (Selector.parse("unix:uid:1000"),),
                                 "created_at": NOW - timedelta(hours=1)}
    fields.update(kw)
    return RegistrationEntry(**fields)  # type: ignore[arg-type]


def jwt_request(*entries: RegistrationEntry, audiences: tuple[str, ...] = ("payments",)) -> MintRequest:
    return MintRequest(rpc="MintJWTSVID", method=Method.MINT_JWT_SVID, actor="uid:0", spiffe_id=SID,
                       entries=entries, audiences=audiences)


def test_deny_rule_denies_with_its_reason_and_labels_allow() -> None:
    denied = decide(POLICY, jwt_request(entry()), now=NOW)
    assert (denied.allowed, denied.rule, denied.reason) == (False, "payments-needs-approval", "payments needs approval")
    assert decide(POLICY, jwt_request(entry(labels={"approved": "true"})), now=NOW).allowed
    assert decide(POLICY, jwt_request(entry(), audiences=("db",)), now=NOW).allowed


def test_admin_mint_without_entry_sees_empty_labels_and_one_denying_entry_denies() -> None:
    assert not decide(POLICY, jwt_request(), now=NOW).allowed
    approved, unapproved = entry("a", labels={"approved": "true"}), entry("b")
    assert not decide(POLICY, jwt_request(approved, unapproved), now=NOW).allowed


def test_smallest_max_ttl_wins_and_caps_the_ttl() -> None:
    decision = decide(POLICY, jwt_request(entry("a", labels={"short": "1"}), entry("b", labels={"shorter": "1"}),
                                          audiences=("db",)), now=NOW)
    assert (decision.allowed, decision.rule, decision.max_ttl) == (True, "shorter", timedelta(seconds=30))
    assert capped_ttl(None, timedelta(hours=1), decision) == timedelta(seconds=30)
    assert capped_ttl(timedelta(seconds=10), timedelta(hours=1), decision) == timedelta(seconds=10)
    assert capped_ttl(timedelta(seconds=10), timedelta(hours=1), Decision(True, "ok")) == timedelta(seconds=10)
    assert capped_ttl(None, timedelta(hours=1), Decision(True, "ok")) is None


def test_quarantine_denies_before_the_policy_with_its_reason() -> None:
    quarantined = entry(labels={"approved": "true", QUARANTINE_REASON_LABEL: "first-seen audience"}, quarantined=True)
    decision = decide(POLICY, jwt_request(quarantined, audiences=("db",)), now=NOW)
    assert (decision.allowed, decision.reason) == (False, "entry quarantined: first-seen audience")


def test_evaluation_error_denies() -> None:
    policy = parse_policy('[[rule]]\nname = "boom"\nwhen = \'entry.labels.missing == "x"\'\neffect = "allow"\n')
    decision = decide(policy, jwt_request(entry()), now=NOW)
    assert not decision.allowed
    assert "boom" in decision.reason and "failed to evaluate" in decision.reason


def test_policy_document_describes_entry_request_time_and_task() -> None:
    e = entry(labels={"approved": "true"}, jwt_svid_ttl=120, max_lifetime=7200)
    doc = policy_document(jwt_request(e), e, now=NOW)
    assert doc["entry"] == {"id": "e1", "spiffe_id": SID, "x509_svid_ttl": 0, "jwt_svid_ttl": 120,
                            "labels": {"approved": "true"}}
    assert doc["request"]["audiences"] == ["payments"] and doc["request"]["spiffe_id"] == SID
    assert doc["request"]["method"] == "MintJWTSVID"
    assert doc["workload"]["selectors"] == ["unix:uid:1000"]
    assert doc["time"]["hour"] == 10
    assert doc["task"]["age"] == timedelta(hours=1)
    assert doc["task"]["expires_at"] == NOW + timedelta(hours=1)


def test_patch_sets_removes_labels_and_clears_quarantine_with_its_reason() -> None:
    e = entry(labels={"approved": "true", "team": "a", QUARANTINE_REASON_LABEL: "x"}, quarantined=True)
    patched = patch_entry(e, set_labels={"sensitivity": "high"}, remove_labels=["approved"], clear_quarantine=False)
    assert patched.quarantined and dict(patched.labels) == {"team": "a", "sensitivity": "high",
                                                            QUARANTINE_REASON_LABEL: "x"}
    cleared = patch_entry(patched, set_labels={}, remove_labels=[], clear_quarantine=True)
    assert not cleared.quarantined and dict(cleared.labels) == {"team": "a", "sensitivity": "high"}


def test_a_replacing_update_cannot_clear_a_quarantine() -> None:
    stored = entry(labels={QUARANTINE_REASON_LABEL: "anomaly"}, quarantined=True)
    replaced = keep_quarantine(entry(labels={"new": "1"}), stored)
    assert replaced.quarantined and dict(replaced.labels) == {"new": "1", QUARANTINE_REASON_LABEL: "anomaly"}
    assert not keep_quarantine(entry(quarantined=True), entry()).quarantined


# -- the guard over a real SQLite datastore ------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DataStore]:
    s = open_datastore(tmp_path / "ds.sqlite3")
    yield s
    s.close()


def make_guard(store: DataStore, policy_text: str, tmp_path: Path) -> Guard:
    path = tmp_path / "policy.toml"
    path.write_text(policy_text)
    clock = ManualClock(NOW)
    return Guard(policy=load_holder(path, clock), audit=CentralAudit(store, clock=clock), clock=clock,
                 default_x509_ttl=timedelta(hours=1), default_jwt_ttl=timedelta(minutes=5))


def _chain(serial: int) -> tuple[x509.Certificate, ...]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(serial).not_valid_before(NOW).not_valid_after(NOW + timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    return (cert,)


def _records(store: DataStore) -> list[dict[str, object]]:
    return [json.loads(r.record) for r in store.iter_audit()]


def test_batch_decides_once_per_entry_and_appends_one_record_per_entry(store: DataStore, tmp_path: Path) -> None:
    guard = make_guard(store, POLICY_TEXT_QUARANTINE_FREE, tmp_path)
    gate = guard.batch(actor="spiffe://example.org/spire/agent/x")
    short, denied = entry("s", labels={"short": "1"}), entry("d", labels={"nope": "1"})
    assert gate.check(short, None) == timedelta(seconds=60)
    assert gate.check(short, timedelta(seconds=10)) == timedelta(seconds=60)  # decided once: first inputs kept
    with pytest.raises(AuthorizationError, match="batch-deny"):
        gate.check(denied, None)
    with pytest.raises(AuthorizationError):
        gate.check(denied, None)
    issued = [x509_issuance(_chain(serial)[0], spiffe_id=short.spiffe_id, entry_id="s") for serial in (0xA1, 0xA2)]
    asyncio.run(gate.commit(issued))
    assert {i.value for i in store.list_issuances(now=NOW, entry_id="s")} == {"a1", "a2"}  # same transaction
    records = _records(store)
    assert [(r["decision"], r["method"]) for r in records] == [("allow", "BatchNewX509SVID"),
                                                              ("deny", "BatchNewX509SVID")]
    assert records[0]["details"]["serials"] == ["a1", "a2"]  # type: ignore[index]
    assert records[0]["details"]["ttl"] == 60  # type: ignore[index]
    assert records[1]["details"]["items"] == 2  # type: ignore[index]
    assert verify_store(store.iter_audit()).ok


POLICY_TEXT_QUARANTINE_FREE = '''
[[rule]]
name = "batch-deny"
when = 'has(entry.labels.nope)'
effect = "deny"
reason = "batch-deny"
''' + SHORT_RULE


def test_mint_signs_with_capped_ttl_and_audits_serial(store: DataStore, tmp_path: Path) -> None:
    guard = make_guard(store, POLICY_TEXT_QUARANTINE_FREE, tmp_path)
    seen: list[timedelta | None] = []

    def sign(ttl: timedelta | None) -> tuple[x509.Certificate, ...]:
        seen.append(ttl)
        return _chain(0xBEEF)

    req = MintRequest(rpc="MintX509SVID", method=Method.MINT_X509_SVID, actor="uid:0", spiffe_id=SID,
                      entries=(entry(labels={"short": "1"}),))
    asyncio.run(guard.mint_x509(req, sign, lambda chain: x509_issuance(chain[0], spiffe_id=SID, entry_id="e1")))
    assert seen == [timedelta(seconds=60)]
    record = _records(store)[-1]
    assert (record["decision"], record["serial"], record["actor"]) == ("allow", "beef", "uid:0")
    assert [i.value for i in store.list_issuances(now=NOW, entry_id="e1")] == ["beef"]  # logged with the record


def test_denied_mint_never_signs_and_is_audited(store: DataStore, tmp_path: Path) -> None:
    guard = make_guard(store, POLICY_TEXT_QUARANTINE_FREE, tmp_path)

    def sign(ttl: timedelta | None) -> str:
        raise AssertionError("must not sign")

    req = MintRequest(rpc="MintJWTSVID", method=Method.MINT_JWT_SVID, actor="uid:0", spiffe_id=SID,
                      entries=(entry(labels={"nope": "1"}),), audiences=("db",))
    def issuance(token: str) -> Issuance:
        raise AssertionError("nothing signed, nothing to log")

    with pytest.raises(AuthorizationError, match="denied by rule 'batch-deny': batch-deny"):
        asyncio.run(guard.mint_jwt(req, sign, issuance))
    record = _records(store)[-1]
    assert (record["decision"], record["reason"], record["details"]["rule"]) == (  # type: ignore[index]
        "deny", "batch-deny", "batch-deny")


def test_broken_policy_at_reload_keeps_the_old_one(store: DataStore, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    guard = make_guard(store, POLICY_TEXT_QUARANTINE_FREE, tmp_path)
    path = tmp_path / "policy.toml"
    path.write_text('[[rule]]\nname = "x"\nwhen = "request.audiences ++"\neffect = "deny"\nreason = "r"\n')
    assert not guard.check_policy()
    assert f"{path}:3" in caplog.text and "previous policy stays in force" in caplog.text
    assert [r.name for r in guard.policy.rules] == ["batch-deny", "short"]


# -- the X.509 TTL in force, sent to agents with each entry ----------------------------------------------


def test_ttl_in_force_follows_labels_ttls_and_policy_reloads(store: DataStore, tmp_path: Path) -> None:
    """What agents compare their live SVIDs against: the entry's TTL (or the default) capped by the policy."""
    guard = make_guard(store, SHORT_RULE, tmp_path)
    assert guard.x509_ttl_in_force(entry()) == 3600  # the server default
    # every stored change bumps the revision
    assert guard.x509_ttl_in_force(entry(revision=1, x509_svid_ttl=600)) == 600
    assert guard.x509_ttl_in_force(entry(revision=2, labels={"short": "1"})) == 60
    assert guard.x509_ttl_in_force(entry(revision=3, labels={"short": "1"}, x509_svid_ttl=30)) == 30
    other = entry("e2", x509_svid_ttl=600, labels={"batch": "1"})
    assert guard.x509_ttl_in_force(other) == 600
    path = tmp_path / "policy.toml"
    path.write_text(SHORT_RULE.replace("has(entry.labels.short)", "has(entry.labels.batch)"))
    assert guard.check_policy()
    assert guard.x509_ttl_in_force(other) == 60  # same revision, new policy generation: evaluated again
    assert guard.x509_ttl_in_force(entry(revision=3, labels={"short": "1"}, x509_svid_ttl=30)) == 30


def test_ttl_in_force_is_evaluated_once_per_entry_revision_and_policy(store: DataStore, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    guard = make_guard(store, SHORT_RULE, tmp_path)
    calls: list[str] = []
    policy = guard.policy
    original = type(policy).evaluate

    def counting(self: object, document: dict[str, object]) -> Decision:
        calls.append("x")
        return original(self, document)  # type: ignore[arg-type]

    monkeypatch.setattr(type(policy), "evaluate", counting)
    for _ in range(5):
        guard.x509_ttl_in_force(entry(labels={"short": "1"}))
    assert len(calls) == 1
    guard.x509_ttl_in_force(entry(revision=1, labels={}))
    assert len(calls) == 2


def test_denied_entry_announces_its_uncapped_ttl(store: DataStore, tmp_path: Path) -> None:
    guard = make_guard(store, '[[rule]]\nname = "no"\nwhen = "true"\neffect = "deny"\nreason = "closed"\n',
                       tmp_path)
    assert guard.x509_ttl_in_force(entry(x509_svid_ttl=900)) == 900


async def test_poll_policy_reports_a_new_generation_once(store: DataStore, tmp_path: Path) -> None:
    """The server wakes its sync streams when a policy takes effect, however the reload was noticed."""
    guard = make_guard(store, SHORT_RULE, tmp_path)
    assert await guard.poll_policy() is False
    path = tmp_path / "policy.toml"
    path.write_text(SHORT_RULE.replace("max_ttl = 60", "max_ttl = 30"))
    assert guard.check_policy()  # noticed on a mint, not by the poll
    assert await guard.poll_policy() is True
    assert await guard.poll_policy() is False


def test_ttl_in_force_without_a_policy_is_the_entry_ttl_or_the_default(store: DataStore) -> None:
    clock = ManualClock(NOW)
    guard = Guard(policy=None, audit=CentralAudit(store, clock=clock), clock=clock,
                  default_x509_ttl=timedelta(hours=1), default_jwt_ttl=timedelta(minutes=5))
    assert guard.x509_ttl_in_force(entry(labels={"short": "1"})) == 3600
    assert guard.x509_ttl_in_force(entry(revision=1, x509_svid_ttl=90)) == 90
