"""Workload API fast paths (issue 4 acceptance 7): response memo, mint-loop kicks, one attestor, cache memos."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from spiffe_agent.attest.base import attest_all
from spiffe_agent.attest.procfs import StatusIds, parse_status
from spiffe_agent.attest.unix import UnixAttestor, unix_id_selectors
from spiffe_agent.audit import AgentAudit
from spiffe_agent.errors import WorkloadAttestationError
from spiffe_agent.guard.config import GuardSettings
from spiffe_agent.guard.decision import Verdict, WorkloadGuard, workload_facts
from spiffe_agent.manager.cache import Entry, Identity, IssuedSvid, JwtToken, SyncUpdate, WorkloadCache, WorkloadView
from spiffe_agent.manager.manager import Manager, ManagerConfig
from spiffe_agent.workloadapi.convert import x509_svid_response
from spiffe_agent.workloadapi.handler import JwtResponseMemo, ResponseMemo
from spiffe_py._peercred import PeerCred
from spiffe_py._policy import Decision, Method
from spiffe_py.audit import load_jsonl, verify_chain
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.clock import ManualClock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId
from tests.unit.agent.test_agent_handler import ENTRY, FULL, NOW, SID, SVID, TD
from tests.unit.agent.test_agent_unix_attestor import STATUS, FakeProcFs, FakeUsers, StaticAttestor, StubCaller

UID = Selector("unix", "uid:1")


def test_memo_returns_the_same_response_for_the_same_snapshot_and_rebuilds_on_rotation() -> None:
    memo = ResponseMemo(x509_svid_response)
    first = memo(FULL)
    # a new view object over the same immutable parts (what every stream's next() produces)
    assert memo(WorkloadView(FULL.identities, FULL.bundle, {}, FULL.crls)) is first
    rotated = IssuedSvid("e1", SID, (b"\x30\x09",), b"KEY2", NOW, NOW + timedelta(hours=2))
    second = memo(WorkloadView((Identity(ENTRY, rotated),), FULL.bundle, {}, FULL.crls))
    assert second is not first and second.svids[0].x509_svid == b"\x30\x09"
    assert memo(WorkloadView(FULL.identities, SpiffeBundle(TD), {}, FULL.crls)) is not first  # new bundle


def test_memo_is_bounded() -> None:
    memo = ResponseMemo(x509_svid_response, size=2)
    views = [WorkloadView((Identity(ENTRY, SVID),), SpiffeBundle(TD)) for _ in range(3)]
    built = [memo(v) for v in views]
    assert memo(views[2]) is built[2]
    assert memo(views[0]) is not built[0]  # the oldest was dropped


async def test_single_attestor_result_and_failure_match_the_fan_out() -> None:
    ok = StaticAttestor("unix", frozenset({UID}))
    assert await attest_all([ok], StubCaller(7)) == {UID}  # type: ignore[arg-type]
    with pytest.raises(WorkloadAttestationError, match="all workload attestors failed for pid 7"):
        await attest_all([StaticAttestor("unix", OSError("gone"))], StubCaller(7))  # type: ignore[arg-type]


def _manager(tmp_path: Path, *entries: Entry) -> Manager:
    manager = Manager(ManagerConfig(TD, (("127.0.0.1", 1),), tmp_path), clock=ManualClock(NOW))
    manager.cache.apply_sync([SyncUpdate(full=True, entries=entries, bundle=SpiffeBundle(TD))])
    return manager


async def test_new_stream_wakes_the_mint_loop_only_when_something_is_unminted(tmp_path: Path) -> None:
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset({UID}))
    manager = _manager(tmp_path, entry)
    kick = manager._mint_kick  # the behaviour under test: whether the mint loop is woken
    async with manager.subscribe(frozenset({UID})):
        assert kick.is_set()  # no SVID yet: mint first (WA-06 waits for it)
    kick.clear()
    manager.cache.put_svid(SVID)
    async with manager.subscribe(frozenset({UID})) as sub:
        assert not kick.is_set()  # already minted: nothing to do
        assert (await sub.next()).identities[0].svid is SVID
    bound = Entry(id="e2", spiffe_id=SID, selectors=frozenset({UID}), bind_to_process=True)
    manager.cache.apply_sync([SyncUpdate(full=False, entries=(bound,))])
    async with manager.subscribe(frozenset({UID})):
        assert kick.is_set()  # a bound entry is minted per process


def test_matching_memo_follows_entry_changes_and_expiry() -> None:
    cache = WorkloadCache()
    first = Entry(id="a", spiffe_id=SID, selectors=frozenset({UID}), expires_at=int(NOW.timestamp()) + 60)
    cache.apply_sync([SyncUpdate(full=True, entries=(first,))])
    assert [e.id for e in cache.matching({UID})] == ["a"]
    cache.apply_sync([SyncUpdate(full=False, entries=(Entry(id="b", spiffe_id=SID, selectors=frozenset({UID})),))])
    assert [e.id for e in cache.matching({UID})] == ["a", "b"]
    assert cache.next_expiry() == int(NOW.timestamp()) + 60
    assert not cache.drop_expired(now=NOW)
    assert cache.drop_expired(now=NOW + timedelta(seconds=60))
    assert [e.id for e in cache.matching({UID})] == ["b"]
    assert cache.next_expiry() == 0
    cache.apply_sync([SyncUpdate(full=False, removed_entry_ids=("b",))])
    assert cache.matching({UID}) == ()


def test_revoked_jti_memo_follows_revocations() -> None:
    cache = WorkloadCache()
    cache.apply_sync([SyncUpdate(full=True, entries=())])
    assert cache.revoked_jtis() == frozenset()
    cache.apply_sync([SyncUpdate(full=False, revocations=(("jwt", "j1"),))])
    assert cache.revoked_jtis() == {"j1"}


def test_jwt_response_memo_reuses_the_response_for_the_same_cached_token_only() -> None:
    memo = JwtResponseMemo(size=2)
    token = JwtToken("tok", SID, ("a",), NOW, NOW + timedelta(minutes=10), jti="j1")
    first = memo([(ENTRY, token)])
    assert first.svids[0].svid == "tok" and first.svids[0].hint == "web"
    assert memo([(ENTRY, token)]) is first  # a warm call: the same cached token object
    renewed = JwtToken("tok2", SID, ("a",), NOW, NOW + timedelta(minutes=10), jti="j2")
    assert memo([(ENTRY, renewed)]).svids[0].svid == "tok2"  # a new token is built, never the old answer
    memo([(ENTRY, JwtToken("tok3", SID, ("a",), NOW, NOW))])
    assert memo([(ENTRY, token)]) is not first  # bounded: the oldest was dropped


class RenamingUsers(FakeUsers):
    def __init__(self) -> None:
        self.alice = "alice"

    def user_name(self, uid: int) -> str | None:
        return self.alice if uid == 1001 else None


async def test_unix_selectors_are_the_same_object_until_ids_or_names_change() -> None:
    users = RenamingUsers()
    attestor = UnixAttestor(FakeProcFs(), users)
    ids = parse_status(STATUS)
    first = await attestor.attest(StubCaller(1, ids))  # type: ignore[arg-type]
    assert first == unix_id_selectors(ids, users)
    assert await attestor.attest(StubCaller(1, parse_status(STATUS))) is first  # type: ignore[arg-type]  # equal ids
    users.alice = "alice2"  # renamed (the name cache's TTL is the attestor's user db's business)
    renamed = await attestor.attest(StubCaller(1, ids))  # type: ignore[arg-type]
    assert Selector("unix", "user:alice2") in renamed and Selector("unix", "user:alice") not in renamed
    other = await attestor.attest(StubCaller(1, StatusIds(euid=0, egid=0, groups=())))  # type: ignore[arg-type]
    assert Selector("unix", "uid:0") in other and Selector("unix", "uid:1001") not in other


def test_guard_workload_facts_are_remembered_per_peer_and_selectors(tmp_path: Path) -> None:
    guard = WorkloadGuard(GuardSettings(anomaly=None), audit=None, clock=ManualClock(NOW))  # type: ignore[arg-type]
    cred = PeerCred(pid=7, uid=1, gid=1)
    sels = frozenset({UID, Selector("unix", "path:/bin/app")})
    facts = guard.facts(cred, sels)
    assert facts == workload_facts(cred, sels) and facts.path == "/bin/app"
    assert guard.facts(PeerCred(pid=7, uid=1, gid=1), frozenset(sels)) is facts
    assert guard.facts(PeerCred(pid=8, uid=1, gid=1), sels).pid == 8
    assert guard.facts(cred, frozenset({UID})).path is None


def test_parse_status_reads_only_whole_lines_and_the_first_of_each() -> None:
    # the kernel escapes a newline in the command name, so "\\n" in Name is text, not a line
    text = "Name:\tx\\nUid:\t0\t0\t0\t0\nUid:\t5\t6\t7\t8\nGid:\t9\t10\t11\t12\nGroups:\t\n"
    ids = parse_status(text)
    assert (ids.euid, ids.egid, ids.groups) == (6, 10, ())
    assert parse_status("Uid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8").groups == ()  # first line, no Groups, no newline
    with pytest.raises(WorkloadAttestationError, match="malformed Uid"):
        parse_status("Name:\tx\nUid:\tx y\nGid:\t1 2\n")
    with pytest.raises(WorkloadAttestationError, match="lacks Uid/Gid"):
        parse_status("Name:\tx\nXUid:\t1\t2\nGid:\t1\t2\n")


def test_repeated_audit_events_are_restamped_and_every_change_shows(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    audit = AgentAudit.open(tmp_path / "data")
    guard = WorkloadGuard(GuardSettings(anomaly=None), audit=audit, clock=clock)
    facts = guard.facts(PeerCred(pid=7, uid=1, gid=1), frozenset({UID}))
    allow = Verdict(Decision(True, "no policy"))
    entry = Entry(id="e1", spiffe_id=SID, selectors=frozenset({UID}))

    def issue(e: Entry = entry, verdict: Verdict = allow, jti: str = "j1", aud: tuple[str, ...] = ("a",)) -> None:
        guard.issued(Method.FETCH_JWT_SVID, e, facts, verdict, audiences=aud, jti=jti)
        clock.advance(timedelta(seconds=1))

    issue()
    issue()  # the same event again: only the time (and the chain fields) differ
    issue(jti="j2")
    issue(verdict=Verdict(Decision(False, "denied here", "r1", timedelta(seconds=30))))
    issue(e=Entry(id="e1", spiffe_id=SpiffeId.parse("spiffe://example.org/renamed"), selectors=frozenset({UID})))
    issue(aud=("b",))
    audit.close()
    recs = load_jsonl(audit.path)
    assert verify_chain(recs).ok
    assert recs[0]["time"] == "2026-01-01T00:00:00.000000Z" and recs[1]["time"] == "2026-01-01T00:00:01.000000Z"
    strip = ("time", "seq", "prev_hash", "hash")
    assert {k: v for k, v in recs[0].items() if k not in strip} == {k: v for k, v in recs[1].items() if k not in strip}
    assert recs[1]["details"] == {"rule": None, "pid": 7, "uid": 1, "entry_id": "e1", "audiences": ["a"]}
    assert [r["jti"] for r in recs[:3]] == ["j1", "j1", "j2"]
    assert (recs[3]["decision"], recs[3]["reason"], recs[3]["details"]["rule"], recs[3]["details"]["max_ttl"]) == (
        "deny", "denied here", "r1", 30)
    assert recs[4]["spiffe_id"] == "spiffe://example.org/renamed"
    assert recs[5]["details"]["audiences"] == ["b"]
