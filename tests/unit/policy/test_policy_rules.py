"""Rule semantics of spiffe_py._policy (issue 6): first deny wins, min max_ttl, errors deny."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from spiffe_py._policy import (
    ALLOW_ALL,
    EMPTY_POLICY,
    EntryFacts,
    Method,
    PolicyError,
    WorkloadFacts,
    build_input,
    load_policy,
    parse_policy,
)
from spiffe_py.selectors import Selector
from tests.support.policy_rules import PAYMENTS_RULE

NOW = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)  # a Thursday

# The acceptance example from issue 6 (tests/support/policy_rules.py).
PAYMENTS_POLICY = PAYMENTS_RULE


def doc(**kw: object) -> dict[str, Any]:
    args: dict[str, object] = {"now": NOW, "method": Method.FETCH_JWT_SVID}
    args.update(kw)
    return build_input(**args)  # type: ignore[arg-type]


def rules(*tables: str) -> str:
    return "\n".join(f"[[rule]]\n{t}\n" for t in tables)


def test_empty_policy_allows_all() -> None:
    assert EMPTY_POLICY.evaluate(doc()) == ALLOW_ALL
    assert parse_policy("", "empty.toml").evaluate(doc()) == ALLOW_ALL
    assert parse_policy("# only a comment\n", "c.toml").rules == ()


def test_first_matching_deny_wins() -> None:
    policy = parse_policy(rules(
        'name = "no-match"\nwhen = "false"\neffect = "deny"\nreason = "never"',
        'name = "first"\nwhen = "true"\neffect = "deny"\nreason = "first reason"',
        'name = "second"\nwhen = "true"\neffect = "deny"\nreason = "second reason"',
    ))
    decision = policy.evaluate(doc())
    assert (decision.allowed, decision.reason, decision.rule) == (False, "first reason", "first")


def test_deny_beats_earlier_allow_with_ttl() -> None:
    policy = parse_policy(rules(
        'name = "cap"\nwhen = "true"\neffect = "allow"\nreason = "cap"\nmax_ttl = 60',
        'name = "block"\nwhen = "true"\neffect = "deny"\nreason = "blocked"',
    ))
    decision = policy.evaluate(doc())
    assert not decision.allowed
    assert decision.max_ttl is None
    assert decision.rule == "block"


def test_allow_takes_smallest_max_ttl_of_matching_rules() -> None:
    policy = parse_policy(rules(
        'name = "hour"\nwhen = "true"\neffect = "allow"\nreason = "1h"\nmax_ttl = 3600',
        'name = "unmatched"\nwhen = "false"\neffect = "allow"\nreason = "10s"\nmax_ttl = 10',
        'name = "five-min"\nwhen = "true"\neffect = "allow"\nreason = "5m"\nmax_ttl = 300',
        'name = "no-ttl"\nwhen = "true"\neffect = "allow"',
    ))
    decision = policy.evaluate(doc())
    assert decision.allowed
    assert decision.max_ttl == timedelta(seconds=300)
    assert (decision.rule, decision.reason) == ("five-min", "5m")


def test_allow_without_ttl_rules_is_plain_allow() -> None:
    policy = parse_policy(rules('name = "a"\nwhen = "true"\neffect = "allow"'))
    assert policy.evaluate(doc()) == ALLOW_ALL


def test_evaluation_error_denies_with_error_as_reason() -> None:
    policy = parse_policy(rules(
        'name = "missing-label"\nwhen = "entry.labels.approved == \\"true\\""\neffect = "allow"',
    ))
    decision = policy.evaluate(doc())
    assert not decision.allowed
    assert decision.rule == "missing-label"
    assert decision.reason.startswith("policy: rule 'missing-label' failed to evaluate: KeyError")
    assert "approved" in decision.reason


def test_type_error_denies() -> None:
    policy = parse_policy(rules('name = "t"\nwhen = "time.hour + \\"x\\" == 1"\neffect = "deny"\nreason = "r"'))
    decision = policy.evaluate(doc())
    assert not decision.allowed
    assert "TypeError" in decision.reason
    assert len(decision.reason) <= 300


def test_non_bool_result_denies() -> None:
    policy = parse_policy(rules('name = "int"\nwhen = "time.hour"\neffect = "allow"'))
    decision = policy.evaluate(doc())
    assert not decision.allowed
    assert decision.reason.endswith("when returned int, not bool")


def test_unknown_workload_field_denies_fail_closed() -> None:
    policy = parse_policy(rules('name = "root"\nwhen = "workload.uid == 0"\neffect = "deny"\nreason = "no root"'))
    assert not policy.evaluate(doc(workload=WorkloadFacts())).allowed  # uid unknown: error, deny
    assert policy.evaluate(doc(workload=WorkloadFacts(uid=1000))).allowed
    assert policy.evaluate(doc(workload=WorkloadFacts(uid=0))).reason == "no root"


@pytest.mark.parametrize(
    ("labels", "audiences", "allowed"),
    [
        ({}, ("payments",), False),
        ({"approved": "false"}, ("payments",), False),
        ({"approved": "true"}, ("payments",), True),
        ({}, ("billing",), True),
        ({}, ("billing", "payments"), False),
    ],
)
def test_acceptance_payments_requires_approved_label(
    labels: dict[str, str], audiences: tuple[str, ...], allowed: bool
) -> None:
    """Issue 6 acceptance: deny audience payments unless entry.labels.approved == "true"."""
    policy = parse_policy(PAYMENTS_POLICY, "payments.toml")
    decision = policy.evaluate(doc(entry=EntryFacts(id="e1", labels=labels), audiences=audiences))
    assert decision.allowed is allowed
    if not allowed:
        assert decision.reason == "audience payments requires an approved entry"


def test_input_document_shape() -> None:
    started = NOW - timedelta(hours=2)
    d = build_input(
        now=NOW,
        method=Method.FETCH_X509_SVID,
        workload=WorkloadFacts(
            spiffe_id="spiffe://example.org/w",
            selectors=(Selector.parse("unix:uid:1000"), "unix:gid:1000"),
            pid=42, uid=1000, gid=1000, path="/usr/bin/w", sha256="ab" * 32,
            container_image="img@sha256:00", container_labels={"app": "w"},
        ),
        entry=EntryFacts(id="e1", spiffe_id="spiffe://example.org/w", x509_svid_ttl=3600, labels={"tier": "1"}),
        requested_spiffe_id="spiffe://example.org/w",
        task_started_at=started,
        task_expires_at=NOW + timedelta(hours=1),
    )
    assert d["workload"]["selectors"] == ["unix:uid:1000", "unix:gid:1000"]
    assert d["workload"]["container"] == {"image": "img@sha256:00", "labels": {"app": "w"}}
    assert d["request"] == {"method": "FetchX509SVID", "spiffe_id": "spiffe://example.org/w", "audiences": []}
    assert d["time"] == {"now": NOW, "hour": 9, "weekday": 4}
    assert d["task"]["age"] == timedelta(hours=2)
    policy = parse_policy(rules(
        'name = "old-task"\nwhen = "task.age > duration(\\"1h\\") && time.now < task.expires_at"\n'
        'effect = "deny"\nreason = "stale"',
        'name = "dow"\nwhen = "time.weekday == time.now.getDayOfWeek() && time.hour == time.now.getHours()"\n'
        'effect = "allow"\nmax_ttl = 5',
        'name = "sel"\nwhen = "\\"unix:uid:1000\\" in workload.selectors"\neffect = "allow"\nmax_ttl = 7',
    ))
    # the stale-task rule matches, proving timestamps and durations are native CEL values
    assert policy.evaluate(d).reason == "stale"
    d["task"]["age"] = timedelta(minutes=1)
    assert policy.evaluate(d).max_ttl == timedelta(seconds=5)


def test_build_input_rejects_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_input(now=datetime(2026, 1, 1), method="x")


def test_optional_fields_absent_until_known() -> None:
    d = doc()
    assert d["task"] == {}
    assert "validator_audience" not in d["request"]
    policy = parse_policy(rules('name = "v"\nwhen = "has(request.validator_audience)"\neffect = "deny"\nreason = "v"'))
    assert policy.evaluate(d).allowed
    assert not policy.evaluate(doc(method=Method.VALIDATE_JWT_SVID, validator_audience="svc")).allowed


# --- load-time refusal -----------------------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '# header\n\n[[rule]]\nname = "ok"\nwhen = "true"\neffect = "allow"\n\n'
        '[[rule]]\nname = "broken"\nwhen = "request.method == "\neffect = "deny"\nreason = "r"\n'
    )
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    err = info.value
    assert (err.source, err.line, err.rule) == (str(path), 10, "broken")
    assert str(err).startswith(f"policy: {path}:10: rule 'broken': when does not compile: ")


def test_syntax_error_in_multiline_when_points_at_the_bad_line() -> None:
    text = '[[rule]]\nname = "m"\nwhen = """\ntrue &&\n  time.hour ==\n"""\neffect = "allow"\n'
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "multi.toml")
    # the expression is "true &&\n  time.hour ==\n": CEL fails at its end, file line 6
    assert info.value.line == 6


def test_triple_quoted_text_does_not_confuse_line_numbers() -> None:
    text = (
        '[[rule]]\nname = "a"\nwhen = """\ntrue\n"""\neffect = "deny"\nreason = """\n[[rule]]\nwhen = "x"\n"""\n\n'
        '[[rule]]\nname = "b"\nwhen = "1 +"\neffect = "deny"\nreason = "r"\n'
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "q.toml")
    assert (info.value.line, info.value.rule) == (14, "b")


def test_toml_syntax_error_names_line() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy('[[rule]]\nname = "a"\nwhen = \n', "bad.toml")
    assert info.value.line == 3
    assert str(info.value).startswith("policy: bad.toml:3: invalid TOML")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('name = "a"\nwhen = "true"\neffect = "maybe"', "'effect' must be 'allow' or 'deny': 'maybe'"),
        ('name = "a"\nwhen = "true"\neffect = "deny"', "'reason' must be a string (non-empty for deny rules)"),
        ('name = "a"\nwhen = "true"\neffect = "allow"\nmax_ttl = 0', "max_ttl must be a positive integer"),
        ('name = "a"\nwhen = "true"\neffect = "allow"\nmax_ttl = "5m"', "max_ttl must be a positive integer"),
        ('name = "a"\nwhen = "true"\neffect = "deny"\nreason = "r"\nmax_ttl = 5', "'max_ttl' applies only to allow"),
        ('name = "a"\nwhen = ""\neffect = "allow"', "'when' must be a CEL expression"),
        ('when = "true"\neffect = "allow"', "needs a non-empty string 'name'"),
        ('name = "a"\nwhen = "true"\neffect = "allow"\nmax-ttl = 5', "unknown keys: ['max-ttl']"),
    ],
)
def test_malformed_rule_refused(table: str, message: str) -> None:
    with pytest.raises(PolicyError, match=r"policy: f\.toml:2: ") as info:
        parse_policy("\n" + rules(table), "f.toml")
    assert message in str(info.value)


def test_duplicate_names_and_unknown_top_level_refused() -> None:
    dup = rules('name = "a"\nwhen = "true"\neffect = "allow"', 'name = "a"\nwhen = "false"\neffect = "allow"')
    with pytest.raises(PolicyError, match=r"duplicate rule names: \['a'\]"):
        parse_policy(dup, "d.toml")
    with pytest.raises(PolicyError, match=r"unknown top-level keys: \['rules'\]"):
        parse_policy('[[rules]]\nname = "a"\n', "u.toml")


def test_load_refuses_missing_oversized_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read: No such file or directory"):
        load_policy(tmp_path / "absent.toml")
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    with pytest.raises(PolicyError, match="larger than 1048576 bytes"):
        load_policy(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\n")
    with pytest.raises(PolicyError, match="not valid UTF-8"):
        load_policy(latin)


# --- only the reachable part of the document is converted; results must not change -------------


@pytest.mark.parametrize(
    "when",
    [
        'entry["labels"]["approved"] == "true"',  # index syntax keeps the whole root
        '[entry].exists(e, e.labels.approved == "true")',  # bare mention keeps the whole root
        'entry . labels.approved == "true"',
        'has(entry.labels.approved) && entry.labels.approved == "true" && time.now > timestamp("2020-01-01T00:00:00Z")',
    ],
)
def test_projection_keeps_every_field_a_rule_reads(when: str) -> None:
    policy = parse_policy(rules(f"name = 'approved'\nwhen = '{when}'\neffect = 'deny'\nreason = 'seen'"))
    assert policy.evaluate(doc(entry=EntryFacts(labels={"approved": "true"}))).reason == "seen"
    assert policy.evaluate(doc(entry=EntryFacts(labels={"approved": "no"}))).allowed


def test_projection_drops_unread_fields_but_unknown_roots_pass_through() -> None:
    policy = parse_policy(rules(
        "name = 'a'\nwhen = 'workload.uid == 1 && extra.flag'\neffect = 'deny'\nreason = 'r'",
        "name = 'b'\nwhen = '\"workload.pid\" == \"x\"'\neffect = 'allow'",
    ))
    d = doc(workload=WorkloadFacts(uid=1, pid=7))
    d["extra"] = {"flag": True}
    assert policy.evaluate(d).reason == "r"
    # a rule naming a field that is absent from the document still fails closed
    missing = parse_policy(rules("name = 'm'\nwhen = 'workload.gid == 1'\neffect = 'allow'"))
    assert "KeyError" in missing.evaluate(d).reason
