"""Hot reload of the policy file (issue 6): changes picked up, broken files keep the old policy."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from spiffe_py._policy import Method, Policy, PolicyError, PolicyHolder, build_input, parse_policy
from spiffe_py.clock import ManualClock

START = datetime(2026, 1, 1, tzinfo=UTC)
DENY_ALL = '[[rule]]\nname = "all"\nwhen = "true"\neffect = "deny"\nreason = "closed"\n'
BROKEN = '[[rule]]\nname = "oops"\nwhen = "true &&"\neffect = "deny"\nreason = "x"\n'
DOC = build_input(now=START, method=Method.FETCH_X509_SVID)
NO_RULES = "# every rule removed on purpose\nrule = []\n"
TWO_RULES = (
    '# production policy\n\n'
    '[[rule]]\nname = "no-root"\nwhen = "has(workload.uid) && workload.uid == 0"\neffect = "deny"\n'
    'reason = "root gets nothing"\n\n' + DENY_ALL
)


def rewrite(path: Path, text: str, bump: int) -> None:
    """Write new content and move mtime forward so the change is visible whatever the fs resolution."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + bump * 1_000_000_000))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text("")
    return path


def test_reload_picks_up_change_after_interval(policy_file: Path) -> None:
    clock = ManualClock(START)
    reloaded: list[Policy] = []
    holder = PolicyHolder(policy_file, clock=clock, check_interval=timedelta(milliseconds=500),
                          on_reload=reloaded.append)
    assert holder.evaluate(DOC).allowed
    rewrite(policy_file, DENY_ALL, bump=1)
    clock.advance(timedelta(milliseconds=499))
    assert holder.evaluate(DOC).allowed  # not yet due: no stat
    clock.advance(timedelta(milliseconds=1))
    assert holder.evaluate(DOC).reason == "closed"
    assert holder.generation == 2
    assert [len(p.rules) for p in reloaded] == [1]


def test_unchanged_file_is_not_reloaded(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file, clock=ManualClock(START))
    assert holder.check() is False
    assert holder.generation == 1


def test_broken_policy_keeps_previous_and_reports_file_and_line(policy_file: Path) -> None:
    clock = ManualClock(START)
    errors: list[PolicyError] = []
    rewrite(policy_file, DENY_ALL, bump=1)
    holder = PolicyHolder(policy_file, clock=clock, check_interval=timedelta(seconds=1), on_error=errors.append)
    before = holder.policy
    rewrite(policy_file, BROKEN, bump=2)
    clock.advance(timedelta(seconds=1))
    assert holder.policy is before
    assert holder.evaluate(DOC).reason == "closed"
    assert holder.last_error is not None
    assert (holder.last_error.source, holder.last_error.line) == (str(policy_file), 3)
    assert len(errors) == 1
    # the same broken version is not re-parsed on every check
    clock.advance(timedelta(seconds=1))
    holder.policy  # noqa: B018
    assert len(errors) == 1
    # a fixed file clears the error
    rewrite(policy_file, NO_RULES, bump=3)
    assert holder.check() is True
    assert holder.last_error is None
    assert holder.evaluate(DOC).allowed


def test_deleted_file_keeps_previous_policy_until_it_returns(policy_file: Path) -> None:
    rewrite(policy_file, DENY_ALL, bump=1)
    errors: list[PolicyError] = []
    holder = PolicyHolder(policy_file, clock=ManualClock(START), on_error=errors.append)
    policy_file.unlink()
    assert holder.check() is False
    assert holder.check() is False
    assert [str(e) for e in errors] == [f"policy: {policy_file}: cannot read: No such file or directory"]
    assert holder.last_error is errors[0]
    assert holder.evaluate(DOC).reason == "closed"
    policy_file.write_text(NO_RULES)
    assert holder.check() is True
    assert holder.evaluate(DOC).allowed


def test_directory_instead_of_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not a regular file"):
        PolicyHolder(tmp_path, clock=ManualClock(START))


def test_replaced_inode_same_size_and_mtime_is_detected(policy_file: Path) -> None:
    """An atomic rename changes the inode even if size and mtime happen to match."""
    other = policy_file.with_name("new.toml")
    policy_file.write_text(DENY_ALL)
    holder = PolicyHolder(policy_file, clock=ManualClock(START))
    other.write_text(DENY_ALL.replace("closed", "CLOSED"))
    st = policy_file.stat()
    os.utime(other, ns=(st.st_atime_ns, st.st_mtime_ns))
    keep = policy_file.with_name("keep.toml")
    os.link(policy_file, keep)  # keep the old inode alive so it cannot be reused
    other.replace(policy_file)
    assert holder.check() is True
    assert holder.evaluate(DOC).reason == "CLOSED"


def test_initial_load_failure_raises(policy_file: Path) -> None:
    policy_file.write_text(BROKEN)
    with pytest.raises(PolicyError, match=r":3: rule 'oops': when does not compile"):
        PolicyHolder(policy_file, clock=ManualClock(START))
    with pytest.raises(PolicyError, match="cannot read"):
        PolicyHolder(policy_file.with_name("missing.toml"), clock=ManualClock(START))


def _holder_with_rules(policy_file: Path, errors: list[PolicyError]) -> PolicyHolder:
    rewrite(policy_file, TWO_RULES, bump=1)
    holder = PolicyHolder(policy_file, clock=ManualClock(START), on_error=errors.append)
    assert holder.evaluate(DOC).reason == "closed"
    return holder


@pytest.mark.parametrize("cut", [
    pytest.param(lambda text: "", id="truncated-to-0-bytes"),
    pytest.param(lambda text: text[:12], id="cut-before-the-first-rule"),
    pytest.param(lambda text: "\n\n# comments only\n", id="comments-only"),
    pytest.param(lambda text: text[:len(text) // 2], id="cut-in-the-middle-of-a-rule"),
    pytest.param(lambda text: text[:len(text) - 12], id="cut-in-the-last-rule"),
])
def test_empty_or_half_written_reload_does_not_become_allow_all(policy_file: Path, cut: Callable[[str], str]) -> None:
    """An attacker (or a crashed editor) who empties the file must not switch the policy to "allow everything"."""
    errors: list[PolicyError] = []
    holder = _holder_with_rules(policy_file, errors)
    rewrite(policy_file, cut(TWO_RULES), bump=2)
    assert holder.check() is False
    assert holder.evaluate(DOC).reason == "closed"
    assert holder.generation == 1
    assert holder.last_error is not None and errors == [holder.last_error]
    assert str(policy_file) in str(holder.last_error)


def test_refusal_of_a_ruleless_file_names_the_explicit_marker(policy_file: Path) -> None:
    errors: list[PolicyError] = []
    holder = _holder_with_rules(policy_file, errors)
    rewrite(policy_file, "", bump=2)
    holder.check()
    assert str(errors[0]) == (f"policy: {policy_file}: the file has no rules but the policy in force has 2; "
                              "write 'rule = []' to remove every rule on purpose")
    # the same empty version is reported once, not on every check
    assert holder.check() is False
    assert len(errors) == 1


def test_explicit_empty_rule_list_removes_every_rule(policy_file: Path) -> None:
    errors: list[PolicyError] = []
    holder = _holder_with_rules(policy_file, errors)
    rewrite(policy_file, NO_RULES, bump=2)
    assert holder.check() is True
    assert holder.evaluate(DOC).allowed
    assert holder.last_error is None and errors == []
    # from no rules, an empty file is no loss: it loads
    rewrite(policy_file, "", bump=3)
    assert holder.check() is True
    assert holder.evaluate(DOC).allowed


def test_declared_empty_only_for_an_explicit_empty_rule_array() -> None:
    assert parse_policy("rule = []").declared_empty
    assert not parse_policy("").declared_empty
    assert not parse_policy("# nothing\n").declared_empty
    assert not parse_policy(DENY_ALL).declared_empty


def test_an_empty_file_still_starts_as_allow_all(policy_file: Path) -> None:
    holder = PolicyHolder(policy_file, clock=ManualClock(START))
    assert holder.evaluate(DOC).allowed
    rewrite(policy_file, DENY_ALL, bump=1)
    assert holder.check() is True
    assert holder.evaluate(DOC).reason == "closed"
