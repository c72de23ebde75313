"""The approvals inbox, pure: which policy rules are approval rules, and which denials still wait.

An *approval rule* is a deny rule of the server's policy whose ``when`` asks for an entry label
with a fixed value, e.g. ``!(has(entry.labels.approved) && entry.labels.approved == "true")``:
setting that label on the entry (for a bounded time) is what approving means. A denial by such a
rule, recorded by an agent (forwarded audit) or by the server itself, is *pending* until an
operator approves or rejects it; a decision settles the denials up to the audit seq it names
and the denials recorded until ``SETTLE_GRACE`` after it (made before the decision reached the
agent); a later denial (after the approval lapsed, say) is pending again::

    rules = approval_rules(policy)
    items = pending_approvals([denial_of(r) for r in recent_denials], decisions, rules)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from spiffe_py._policy import Effect, Policy
from spiffe_server.datastore import ApprovalDecision, AuditRecord

# entry.labels.<key> == "<value>" (or entry.labels["<key>"] == "<value>") inside a rule's `when`
_LABEL_TEST = re.compile(
    r"""entry\.labels(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([^"\\]{1,63})"\s*\])\s*==\s*"([^"\\]{0,256})\"""")

MAX_TTL_SECONDS = 7 * 24 * 3600  # an approval lasts at most a week
# Denials made up to this long after a decision still belong to it: the label takes a moment to
# reach the agent, and the agent forwards its records in batches (every 0.5 s).
SETTLE_GRACE = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """What approving a denial by ``rule`` sets: ``entry.labels[label] = value``."""

    rule: str
    label: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)
class Pending:
    """The denials of one entry by one approval rule that no decision covers yet."""

    entry_id: str
    spiffe_id: str
    rule: str
    reason: str
    audiences: tuple[str, ...]
    method: str
    last_denied_at: datetime
    count: int
    label: str
    value: str
    reporter: str
    through_seq: int


def approval_rules(policy: Policy) -> dict[str, ApprovalRule]:
    """The approval rules of ``policy`` by name (deny rules that test one entry label for a value)."""
    out: dict[str, ApprovalRule] = {}
    for rule in policy.rules:
        if rule.effect is not Effect.DENY:
            continue
        match = _LABEL_TEST.search(rule.when)
        if match is None:
            continue
        label = match.group(1) or match.group(2)
        out[rule.name] = ApprovalRule(rule=rule.name, label=label, value=match.group(3), reason=rule.reason)
    return out


@dataclass(frozen=True, slots=True)
class Denial:
    """The facts of one deny record that the inbox needs."""

    seq: int
    time: datetime
    reporter: str
    spiffe_id: str
    method: str
    reason: str
    rule: str
    entry_id: str
    audiences: tuple[str, ...]


def denial_of(record: AuditRecord) -> Denial | None:
    """The facts of a deny record, whether recorded by the server or forwarded by an agent (None: no rule)."""
    try:
        outer: Mapping[str, Any] = json.loads(record.record)
    except ValueError:
        return None
    if not isinstance(outer, dict):
        return None
    details = _mapping(outer.get("details"))
    inner = details.get("forwarded")
    event: Mapping[str, Any] = inner if isinstance(inner, dict) else outer
    facts = _mapping(event.get("details"))
    rule, entry_id = facts.get("rule"), facts.get("entry_id")
    if not isinstance(rule, str) or not isinstance(entry_id, str) or not rule or not entry_id:
        return None
    audiences = facts.get("audiences") or ()
    return Denial(seq=record.seq, time=record.time, reporter=str(outer.get("actor", "")),
                   spiffe_id=str(event.get("spiffe_id") or record.spiffe_id), method=str(event.get("method", "")),
                   reason=str(event.get("reason", "")), rule=rule, entry_id=entry_id,
                   audiences=tuple(str(a) for a in audiences if isinstance(a, str)))


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def pending_approvals(denials: Iterable[Denial | None], decisions: Iterable[ApprovalDecision],
                      rules: Mapping[str, ApprovalRule]) -> list[Pending]:
    """One item per (entry, approval rule) with denials after the last decision; newest first.

    ``denials`` are :func:`denial_of` the deny records (records are sealed, so callers may memoize it).
    """
    settled = {(d.entry_id, d.rule): (d.through_seq, d.decided_at + SETTLE_GRACE) for d in decisions}
    found: dict[tuple[str, str], list[Denial]] = {}
    for denial in denials:
        if denial is None or denial.rule not in rules:
            continue
        key = (denial.entry_id, denial.rule)
        through_seq, until = settled.get(key, (0, None))
        if denial.seq <= through_seq or (until is not None and denial.time <= until):
            continue
        found.setdefault(key, []).append(denial)
    items = []
    for (entry_id, rule_name), group in found.items():
        newest = max(group, key=lambda d: d.seq)
        rule = rules[rule_name]
        items.append(Pending(entry_id=entry_id, spiffe_id=newest.spiffe_id, rule=rule_name,
                             reason=newest.reason or rule.reason, audiences=newest.audiences, method=newest.method,
                             last_denied_at=newest.time, count=len(group), label=rule.label, value=rule.value,
                             reporter=newest.reporter, through_seq=newest.seq))
    return sorted(items, key=lambda p: p.through_seq, reverse=True)


def check_approval_ttl(seconds: int) -> int:
    """An approval's duration: 1 s to a week (ValueError names the bound)."""
    if not 1 <= seconds <= MAX_TTL_SECONDS:
        raise ValueError(f"must be within 1..{MAX_TTL_SECONDS} seconds, got {seconds}")
    return seconds


def newest_first(records: Sequence[AuditRecord]) -> list[AuditRecord]:
    """Records sorted by seq, newest first."""
    return sorted(records, key=lambda r: r.seq, reverse=True)
