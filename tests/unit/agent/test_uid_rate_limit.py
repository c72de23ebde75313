"""The per-uid Workload API rate limit is on by default: a flood from one uid is refused, others are not."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from spiffe_agent.audit import AgentAudit
from spiffe_agent.config import AgentConfig
from spiffe_agent.errors import AgentConfigError
from spiffe_agent.guard.config import DEFAULT_UID_LIMIT, uid_rate_limit_config
from spiffe_agent.guard.decision import RateLimitedError, WorkloadGuard
from spiffe_agent.manager.cache import Entry, Identity, WorkloadView
from spiffe_agent.ratelimit import Limit
from spiffe_py._peercred import PeerCred
from spiffe_py.clock import ManualClock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId
from tests.unit.agent.test_guard import NOW, entry, records

SELECTORS = frozenset({Selector.parse("unix:uid:1000")})
FLOODER, NEIGHBOUR = PeerCred(pid=42, uid=1000, gid=1000), PeerCred(pid=43, uid=1001, gid=1001)


@dataclass(frozen=True)
class Token:
    jti: str


class Source:
    """One entry for every caller; each call mints a token."""

    def __init__(self) -> None:
        self.minted = 0

    def jwt_entries(self, selectors: frozenset[Selector], spiffe_id: SpiffeId | None = None) -> list[Entry]:
        return [entry()]

    async def jwt_svids(self, entries: Sequence[Entry], audience: Sequence[str]) -> list[tuple[Entry, Any]]:
        self.minted += 1
        return [(e, Token(f"j{self.minted}")) for e in entries]


async def fetch_jwt(guard: WorkloadGuard, source: Source, cred: PeerCred) -> None:
    """FetchJWTSVID as GuardedSource runs it: verdicts (and the uid charge), mint, audit."""
    facts = guard.facts(cred, SELECTORS)
    verdicts = guard.jwt_verdicts(source.jwt_entries(SELECTORS), facts, ["svc"], None)
    minted = await source.jwt_svids([e for e, v in verdicts if v.allowed], ["svc"])
    guard.jwt_issued(minted, verdicts, facts, ["svc"])


def default_guard(tmp_path: Path) -> tuple[WorkloadGuard, AgentAudit, ManualClock]:
    """A guard with the settings of an agent configured with nothing but its trust domain."""
    clock = ManualClock(NOW)
    audit = AgentAudit.open(tmp_path / "data")
    settings = AgentConfig(trust_domain="example.org").guard_settings()
    return WorkloadGuard(settings, audit=audit, clock=clock), audit, clock


def test_the_default_agent_config_limits_each_uid() -> None:
    assert AgentConfig(trust_domain="example.org").guard_settings().uid_rate_limit == DEFAULT_UID_LIMIT
    assert (DEFAULT_UID_LIMIT.rate, DEFAULT_UID_LIMIT.burst) == (50.0, 200)


def test_uid_rate_limit_config_tunes_turns_off_and_refuses_bad_values() -> None:
    assert uid_rate_limit_config({"rate": 5}) == Limit(rate=5.0, burst=200)
    assert uid_rate_limit_config({"enabled": False}) is None
    for bad in ({"rate": 0}, {"burst": "x"}, {"per": 1}, {"enabled": "no"}):
        with pytest.raises(AgentConfigError, match="uid_rate_limit"):
            uid_rate_limit_config(bad)


async def test_a_jwt_flood_from_one_uid_is_refused_after_the_burst_and_audited(tmp_path: Path) -> None:
    guard, audit, clock = default_guard(tmp_path)
    source = Source()
    for _ in range(DEFAULT_UID_LIMIT.burst):
        await fetch_jwt(guard, source, FLOODER)
    with pytest.raises(RateLimitedError, match="rate limit exceeded for this uid"):
        await fetch_jwt(guard, source, FLOODER)
    assert source.minted == DEFAULT_UID_LIMIT.burst  # nothing minted for the refused call
    await fetch_jwt(guard, source, NEIGHBOUR)  # another uid has its own budget
    denied = [r for r in records(audit) if r["decision"] == "deny"]
    assert [r["reason"] for r in denied] == ["rate limit exceeded for this uid"]
    clock.advance(timedelta(seconds=1))  # refilled at the sustained rate
    for _ in range(int(DEFAULT_UID_LIMIT.rate)):
        await fetch_jwt(guard, source, FLOODER)
    with pytest.raises(RateLimitedError):
        await fetch_jwt(guard, source, FLOODER)
    audit.close()


async def test_an_x509_stream_charges_its_uid_once_however_many_identities_it_has(tmp_path: Path) -> None:
    guard, audit, _ = default_guard(tmp_path)
    many = WorkloadView(tuple(Identity(entry(f"e{i}"), None) for i in range(DEFAULT_UID_LIMIT.burst + 50)), None)
    gate = guard.x509_gate(FLOODER, SELECTORS)
    for _ in range(3):  # every identity is served, on every view of the stream
        assert len(gate.apply(many).identities) == len(many.identities)
    source = Source()
    for _ in range(DEFAULT_UID_LIMIT.burst - 1):  # the stream took one call of the budget
        await fetch_jwt(guard, source, FLOODER)
    with pytest.raises(RateLimitedError):
        guard.x509_gate(FLOODER, SELECTORS).apply(many)
    audit.close()
