"""WorkloadCache: matching, default-identity ordering, unique hints (WA-14, WA-29), LRU, JWT cache."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spiffe_agent.manager.cache import (
    Entry,
    IssuedSvid,
    JwtToken,
    SyncUpdate,
    WorkloadCache,
    order_identities,
    outdated,
)
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain

TD = TrustDomain.parse("example.org")
FED = TrustDomain.parse("fed.example")
NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = Selector("unix", "uid:1000")
GID = Selector("unix", "gid:50")


def entry(eid: str, path: str = "/w", sels: tuple[Selector, ...] = (UID,), **kw: object) -> Entry:
    return Entry(id=eid, spiffe_id=SpiffeId.parse(f"spiffe://example.org{path}"), selectors=frozenset(sels), **kw)  # type: ignore[arg-type]


def svid(e: Entry, start: datetime = NOW, hours: int = 1) -> IssuedSvid:
    return IssuedSvid(e.id, e.spiffe_id, (b"leaf",), b"SECRETKEY", start, start + timedelta(hours=hours))


def cache_with(*entries: Entry, limit: int = 10) -> WorkloadCache:
    cache = WorkloadCache(max_x509_svids=limit)
    cache.apply_sync([SyncUpdate(full=True, entries=entries, bundle=SpiffeBundle(TD))])
    return cache


def test_matching_requires_all_entry_selectors() -> None:
    cache = cache_with(entry("a", sels=(UID,)), entry("b", sels=(UID, GID)), entry("c", sels=(GID,)))
    assert [e.id for e in cache.matching({UID})] == ["a"]
    assert [e.id for e in cache.matching({UID, GID})] == ["a", "b", "c"]


def test_default_identity_is_lowest_entry_id_wa29() -> None:
    got = order_identities([entry("z"), entry("m"), entry("b")])
    assert [e.id for e in got] == ["b", "m", "z"]


def test_duplicate_hints_keep_oldest_entry_wa14() -> None:
    got = order_identities(
        [entry("a", hint="db", created_at=20), entry("b", hint="db", created_at=10), entry("c", hint="web")]
    )
    assert [e.id for e in got] == ["b", "c"]


def test_view_waits_for_svids_and_lists_federated_only_when_asked() -> None:
    cache = cache_with(entry("a", federates_with=(FED,)))
    cache.apply_sync([SyncUpdate(full=False, federated_bundles=(SpiffeBundle(FED),))])
    view = cache.view({UID})
    assert not view.complete
    assert set(view.federated) == {FED}
    cache.put_svid(svid(cache.entries()[0]))
    assert cache.view({UID}).complete
    assert cache.view({GID}).identities == ()


def test_incremental_sync_removes_entry_and_its_svid() -> None:
    a = entry("a")
    cache = cache_with(a, entry("b"))
    cache.put_svid(svid(a))
    assert cache.apply_sync([SyncUpdate(full=False, removed_entry_ids=("a",))]) is True
    assert not cache.has_svid("a")
    assert [e.id for e in cache.entries()] == ["b"]


def test_changed_spiffe_id_drops_old_svid() -> None:
    a = entry("a", "/old")
    cache = cache_with(a)
    cache.put_svid(svid(a))
    cache.apply_sync([SyncUpdate(full=False, entries=(entry("a", "/new"),))])
    assert not cache.has_svid("a")


def test_sync_without_change_reports_none() -> None:
    a = entry("a")
    cache = cache_with(a)
    assert cache.apply_sync([SyncUpdate(full=False, entries=(a,))]) is False


def test_lru_evicts_least_recently_used_but_not_pinned() -> None:
    a, b, c = entry("a"), entry("b"), entry("c")
    cache = cache_with(a, b, c, limit=2)
    cache.put_svid(svid(a))
    cache.pin(["a"])
    cache.put_svid(svid(b))
    cache.put_svid(svid(c))  # over the limit: b is the oldest unpinned
    assert (cache.has_svid("a"), cache.has_svid("b"), cache.has_svid("c")) == (True, False, True)
    cache.unpin(["a"])
    cache.view({UID})  # touches a and c (b absent); a stays older than c? view order a, c
    cache.put_svid(svid(b))
    assert cache.svid_count() == 2
    assert cache.has_svid("b")


def test_store_over_the_limit_evicts_the_oldest_unpinned_down_to_the_limit() -> None:
    a, b, c, d, e = (entry(i) for i in "abcde")
    cache = cache_with(a, b, c, d, e, limit=2)
    cache.pin(["a", "b", "c"])
    for x in (a, b, c):
        cache.put_svid(svid(x))
    assert cache.svid_count() == 3  # all pinned: over the limit until released
    cache.unpin(["a", "c"])
    cache.put_svid(svid(d))  # over by two: a and c go, pinned b and the new d stay
    assert [i for i in "abcde" if cache.has_svid(i)] == ["b", "d"]
    cache.unpin(["b"])
    cache.put_svid(svid(e))
    assert [i for i in "abcde" if cache.has_svid(i)] == ["d", "e"]


def test_svid_targets_subscribed_first_then_prefetch_within_limit() -> None:
    a, b = entry("a", sels=(GID,)), entry("b", sels=(UID,))
    cache = cache_with(a, b, limit=1)
    assert [e.id for e in cache.svid_targets([{UID}], now=NOW)] == ["b"]
    assert [e.id for e in cache.svid_targets([], now=NOW)] == ["a"]


def test_svid_targets_rotates_at_half_life() -> None:
    a = entry("a")
    cache = cache_with(a)
    cache.put_svid(svid(a, hours=2))
    assert cache.svid_targets([{UID}], now=NOW + timedelta(minutes=59)) == []
    assert [e.id for e in cache.svid_targets([{UID}], now=NOW + timedelta(minutes=60))] == ["a"]


def test_jwt_cache_keyed_by_sorted_audience_and_refreshed_at_half_life() -> None:
    sid = SpiffeId.parse("spiffe://example.org/w")
    cache = cache_with(entry("a"))
    tok = JwtToken("t", sid, ("b", "a"), NOW, NOW + timedelta(minutes=10))
    cache.put_jwt(tok)
    assert cache.get_jwt(sid, ["a", "b"], now=NOW + timedelta(minutes=4)) is tok
    assert cache.get_jwt(sid, ["a"], now=NOW) is None
    assert cache.get_jwt(sid, ["a", "b"], now=NOW + timedelta(minutes=5)) is None


def test_repr_hides_secrets() -> None:
    sid = SpiffeId.parse("spiffe://example.org/w")
    assert "secret-token" not in repr(JwtToken("secret-token", sid, ("a",), NOW, NOW))
    assert "SECRETKEY" not in repr(svid(entry("a")))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limits must be positive"):
        WorkloadCache(max_x509_svids=0)


def test_refused_entry_completes_view_and_is_retried_later() -> None:
    a, b = entry("a"), entry("b")
    cache = cache_with(a, b)
    cache.put_svid(svid(a))
    cache.mark_refused("b", now=NOW)
    view = cache.view({UID})
    assert view.complete
    assert [e.id for e, _ in view.svids()] == ["a"]
    assert cache.svid_targets([{UID}], now=NOW + timedelta(seconds=59)) == []
    assert [e.id for e in cache.svid_targets([{UID}], now=NOW + timedelta(seconds=60))] == ["b"]
    cache.put_svid(svid(b))
    assert not cache.view({UID}).identities[1].refused


def test_paged_full_sync_in_one_batch_keeps_svids_of_later_pages() -> None:
    a, b = entry("a"), entry("b")
    cache = cache_with(a, b)
    cache.put_svid(svid(a))
    cache.put_svid(svid(b))
    page1 = SyncUpdate(full=True, entries=(a,), bundle=SpiffeBundle(TD))
    page2 = SyncUpdate(full=False, entries=(b,))
    assert cache.apply_sync([page1, page2]) is False
    assert cache.has_svid("a") and cache.has_svid("b")


def test_revoked_serial_and_jti_are_dropped_and_reissued() -> None:
    a = entry("a")
    cache = cache_with(a)
    cache.put_svid(IssuedSvid("a", a.spiffe_id, (b"x",), b"k", NOW, NOW + timedelta(hours=1), serial=0xABC))
    sid = a.spiffe_id
    cache.put_jwt(JwtToken("t", sid, ("aud",), NOW, NOW + timedelta(minutes=10), jti="j1"))
    changed = cache.apply_sync([SyncUpdate(full=False, revocations=(("x509", "abc"), ("jwt", "j1")))])
    assert changed is True
    assert not cache.has_svid("a")
    assert cache.get_jwt(sid, ["aud"], now=NOW) is None
    assert [e.id for e in cache.svid_targets([{UID}], now=NOW)] == ["a"]


def test_jwt_from_tainted_key_is_dropped() -> None:
    a = entry("a")
    cache = cache_with(a)
    cache.put_jwt(JwtToken("t", a.spiffe_id, ("aud",), NOW, NOW + timedelta(minutes=10), kid="k-old"))
    cache.put_jwt(JwtToken("u", a.spiffe_id, ("b",), NOW, NOW + timedelta(minutes=10), kid="k-new"))
    cache.apply_sync([SyncUpdate(full=False, tainted_jwt_keys=frozenset({"k-old"}))])
    assert cache.get_jwt(a.spiffe_id, ["aud"], now=NOW) is None
    assert cache.get_jwt(a.spiffe_id, ["b"], now=NOW) is not None


def test_svid_from_tainted_authority_is_dropped() -> None:
    a, b = entry("a"), entry("b")
    cache = cache_with(a, b)
    cache.put_svid(IssuedSvid("a", a.spiffe_id, (b"x",), b"k", NOW, NOW, authority_ids=frozenset({"aa11"})))
    cache.put_svid(IssuedSvid("b", b.spiffe_id, (b"x",), b"k", NOW, NOW, authority_ids=frozenset({"bb22"})))
    cache.apply_sync([SyncUpdate(full=False, bundle=SpiffeBundle(TD), tainted_authorities=frozenset({"aa11"}))])
    assert (cache.has_svid("a"), cache.has_svid("b")) == (False, True)


def test_crls_reach_the_view_and_none_means_unchanged() -> None:
    cache = cache_with(entry("a"))
    cache.apply_sync([SyncUpdate(full=False, crls=(b"crl1",))])
    cache.apply_sync([SyncUpdate(full=False)])
    assert cache.view({UID}).crls == (b"crl1",)
    cache.apply_sync([SyncUpdate(full=False, crls=())])
    assert cache.view({UID}).crls == ()


# -- live SVIDs after an entry or policy change ---------------------------------------------------------


def minted(e: Entry, *, seconds: int, dns: tuple[str, ...] = (), start: datetime = NOW) -> IssuedSvid:
    """An SVID as the server signs it for ``e``: NotBefore backdated 10 s, lifetime ``seconds`` + 10."""
    return IssuedSvid(e.id, e.spiffe_id, (b"leaf",), b"KEY", start - timedelta(seconds=10),
                      start + timedelta(seconds=seconds), dns_names=dns, entry_version=e.version)


def changed(e: Entry, **kw: object) -> Entry:
    fields = {f: getattr(e, f) for f in Entry.__dataclass_fields__}
    fields.update(kw, revision=e.revision + 1)
    return Entry(**fields)  # type: ignore[arg-type]


def test_svid_outliving_the_ttl_in_force_is_reminted_at_once() -> None:
    """A label that puts the entry under a 120 s cap must not leave its one-hour SVID served for 30 minutes."""
    a = entry("a", x509_svid_ttl=3600, x509_ttl_in_force=3600)
    cache = cache_with(a)
    cache.put_svid(minted(a, seconds=3600))
    assert cache.svid_targets([{UID}], now=NOW + timedelta(seconds=5)) == []
    cache.apply_sync([SyncUpdate(full=False, entries=(changed(a, labels={"sensitivity": "high"},
                                                               x509_ttl_in_force=120),))])
    assert [e.id for e in cache.svid_targets([{UID}], now=NOW + timedelta(seconds=5))] == ["a"]
    assert cache.has_svid("a")  # still served until the re-minted one arrives


def test_only_the_changes_that_matter_remint() -> None:
    a = entry("a", x509_svid_ttl=3600, x509_ttl_in_force=3600, dns_names=("a.example.org",))
    svid_a = minted(a, seconds=3600, dns=("a.example.org",))
    at = NOW + timedelta(seconds=5)
    # a label the policy does not cap on, a new hint: the SVID stays
    assert not outdated(changed(a, labels={"team": "x"}, hint="h"), svid_a, now=at)
    # a longer TTL: the SVID is not outliving anything, it rotates as usual
    assert not outdated(changed(a, x509_svid_ttl=7200, x509_ttl_in_force=7200), svid_a, now=at)
    # stale DNS names, or a shorter TTL
    assert outdated(changed(a, dns_names=("b.example.org",)), svid_a, now=at)
    assert outdated(changed(a, dns_names=("b.example.org", "a.example.org")), svid_a, now=at)
    assert outdated(changed(a, x509_svid_ttl=60, x509_ttl_in_force=60), svid_a, now=at)
    # an SVID that ends within the new TTL anyway is left to expire
    assert not outdated(changed(a, x509_ttl_in_force=120), svid_a, now=NOW + timedelta(seconds=3500))
    # without a TTL in force from the server, the entry's own TTL is used
    assert outdated(changed(a, x509_svid_ttl=60, x509_ttl_in_force=0), svid_a, now=at)


def test_a_reminted_svid_never_loops() -> None:
    """An SVID minted for the entry as it is now is never outdated, whatever lifetime the server gave it."""
    a = entry("a", x509_svid_ttl=3600, x509_ttl_in_force=120)
    assert not outdated(a, minted(a, seconds=3600), now=NOW)
    assert not outdated(a, minted(a, seconds=120), now=NOW)
    b = changed(a, x509_ttl_in_force=60)
    assert not outdated(b, minted(b, seconds=60), now=NOW)

