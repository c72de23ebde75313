"""The policy file: TOML with CEL ``when`` expressions, loaded at start and on every hot reload."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from spiffe_py._policy import (
    Decision,
    EntryFacts,
    Policy,
    PolicyError,
    WorkloadFacts,
    build_input,
    load_policy,
    parse_policy,
)
from tests.fuzz._fuzz import CHEAP, MEDIUM, NOW, assert_outcome, attempt, mutate

_GOOD = """
[[rule]]
name = "deny-root"
when = 'workload.uid == 0 && request.method == "FetchJWTSVID"'
effect = "deny"
reason = "no tokens for root"

[[rule]]
name = "short"
when = '''entry.labels["sensitivity"] == "high"'''
effect = "allow"
max_ttl = 120
"""

_atoms = st.sampled_from([
    "true", "false", "workload.uid == 0", "request.method", 'request.audiences.exists(a, a == "x")',
    "entry.labels", 'entry.labels["k"]', "time.hour < 25", "task.age", "workload.selectors.size()", "1 / 0",
    "null", "'s'", "b'x'", "1u", "1.5", "[1, 2]", "{'a': 1}", "has(workload.pid)", "int('x')",
    "duration('1s')", "timestamp('x')", "workload.missing", "size(request.audiences) > 2", "9223372036854775807 + 1",
])


def _expr(depth: int) -> st.SearchStrategy[str]:
    if depth == 0:
        return _atoms
    sub = _expr(depth - 1)
    return st.one_of(
        sub,
        st.tuples(sub, st.sampled_from([" && ", " || ", " == ", " + ", " < ", " in ", " ? ", " : ", "."]), sub)
        .map("".join),
        sub.map(lambda e: f"!({e})"),
        sub.map(lambda e: f"({e}"),
    )


_values = st.one_of(st.text(max_size=12), st.integers(-(2**64), 2**64), st.booleans(), st.floats(allow_nan=False))


def _toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


@st.composite
def policy_texts(draw: st.DrawFn) -> str:
    """Rule tables with valid and invalid members, CEL from a small grammar, odd TOML quoting."""
    lines = []
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(st.sampled_from(["[[rule]]", "[rule]", "[[ rule ]] # c", "[[other]]"])))
        for key in draw(st.lists(st.sampled_from(["name", "when", "effect", "reason", "max_ttl", "extra"]),
                                 max_size=6)):
            if key == "when":
                expr = draw(_expr(2))
                quote = draw(st.sampled_from(["'", "'''", '"""']))
                value = f"{quote}{expr}{quote}" if "'" not in expr or quote != "'" else json.dumps(expr)
            elif key == "effect":
                value = _toml_value(draw(st.sampled_from(["allow", "deny", "Allow", ""]) | _values))
            elif key == "max_ttl":
                value = _toml_value(draw(st.integers(-5, 2**63) | _values))
            else:
                value = _toml_value(draw(_values))
            lines.append(f"{key} = {value}")
    return "\n".join(lines)


def _decide(policy: Policy) -> Decision:
    doc = build_input(now=NOW, method="FetchJWTSVID", audiences=("x",),
                      workload=WorkloadFacts(uid=0, pid=1, selectors=("unix:uid:0",)),
                      entry=EntryFacts(labels={"sensitivity": "high"}))
    return policy.evaluate(doc)


@MEDIUM
@given(st.one_of(policy_texts(), st.text(max_size=200)))
def test_parse_policy_raises_only_policy_error_and_evaluation_never_raises(text: str) -> None:
    outcome = attempt(parse_policy, text, "fuzz.toml")
    assert_outcome(outcome, Policy, PolicyError)
    if isinstance(outcome, Policy):  # evaluation fails closed: a Decision, never an exception
        assert isinstance(_decide(outcome), Decision)


@st.composite
def mutated_files(draw: st.DrawFn) -> bytes:
    return mutate(_GOOD.encode(), draw, max_edits=3)


@CHEAP
@given(st.one_of(mutated_files(), st.binary(max_size=200)))
def test_load_policy_raises_only_policy_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.toml"
        path.write_bytes(data)
        outcome = attempt(load_policy, path)
    assert_outcome(outcome, Policy, PolicyError)
    if isinstance(outcome, Policy):
        assert isinstance(_decide(outcome), Decision)
