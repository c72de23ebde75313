"""Keyset paging of revocations (``list_revocations_page``) on SQLite and PostgreSQL.

    result = store.list_revocations_page(now=NOW, page=Page(token=result.next_token, size=10))
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest

from spiffe_server.datastore import InvalidArgumentError, Page, Revocation, RevocationKind, SqlDataStore
from tests.datastore.helpers import LATER, NOW, TD

SERIALS = [f"{n:04x}" for n in range(0, 34, 2)]  # 17 hex serials
JTIS = ["a", "a:b", "jti-\u00e9/1", "z"]  # ':' and non-ASCII survive the token
N = len(SERIALS) + len(JTIS)


def _rev(value: str, kind: RevocationKind = RevocationKind.SERIAL, expires_at: object = LATER) -> Revocation:
    return Revocation(kind=kind, value=value, revoked_at=NOW, expires_at=expires_at,  # type: ignore[arg-type]
                      agent_id=f"{TD}/agent", reason="test")


def _fill(store: SqlDataStore) -> list[tuple[RevocationKind, str]]:
    """Store the revocations (plus expired ones); their keys in listing order (kind, then value)."""
    store.add_revocations([_rev(s) for s in SERIALS] + [_rev(j, RevocationKind.JTI) for j in JTIS])
    store.add_revocations([_rev("0003", expires_at=NOW), _rev("b-expired", RevocationKind.JTI, expires_at=NOW)])
    return sorted([(RevocationKind.SERIAL, s) for s in SERIALS] + [(RevocationKind.JTI, j) for j in JTIS],
                  key=lambda key: (key[0].value, key[1]))


def _pages(store: SqlDataStore, size: int) -> list[list[tuple[RevocationKind, str]]]:
    pages, token = [], ""
    while True:
        result = store.list_revocations_page(now=NOW, page=Page(token=token, size=size))
        pages.append([(r.kind, r.value) for r in result.items])
        assert len(pages) <= N + 1, "paging does not end"
        if not result.next_token:
            return pages
        token = result.next_token


@pytest.mark.parametrize("size", [1, 2, 5, 7, N - 1, N, N + 1, 1000])
def test_pages_return_each_unexpired_revocation_once_in_order(store: SqlDataStore, size: int) -> None:
    expected = _fill(store)
    pages = _pages(store, size)
    assert [key for page in pages for key in page] == expected  # all, once each, in order, expired ones left out
    assert [len(page) for page in pages] == [min(size, N - start) for start in range(0, N, size)]  # no empty tail
    assert [(r.kind, r.value) for r in store.list_revocations(now=NOW)] == expected  # same order as the full list


def test_page_items_are_whole_records(store: SqlDataStore) -> None:
    _fill(store)
    first = store.list_revocations_page(now=NOW, page=Page(size=3))
    assert first.items == store.list_revocations(now=NOW)[:3]
    assert first.items[0] == _rev("a", RevocationKind.JTI)


def test_empty_table_is_one_empty_page(store: SqlDataStore) -> None:
    assert store.list_revocations_page(now=NOW) == store.list_revocations_page(now=NOW, page=Page(size=1))
    result = store.list_revocations_page(now=NOW)
    assert (result.items, result.next_token) == ((), "")


def test_token_past_the_last_revocation_yields_no_more(store: SqlDataStore) -> None:
    _fill(store)
    first = store.list_revocations_page(now=NOW, page=Page(size=N - 1))
    assert first.next_token
    later = NOW + timedelta(hours=2)
    assert store.prune_revocations(now=later) == N + 2  # the rest is gone before the next page is asked for
    result = store.list_revocations_page(now=NOW, page=Page(token=first.next_token, size=5))
    assert (result.items, result.next_token) == ((), "")


def test_keyset_cursor_is_stable_under_inserts_between_pages(store: SqlDataStore) -> None:
    _fill(store)
    first = store.list_revocations_page(now=NOW, page=Page(size=6))  # the four jtis and 2 serials
    store.add_revocations([_rev("0", RevocationKind.JTI), _rev("ffff")])  # one sorts before the cursor, one after
    rest = store.list_revocations_page(now=NOW, page=Page(token=first.next_token, size=1000))
    seen = [r.value for r in first.items + rest.items]
    assert len(seen) == len(set(seen)) == N + 1
    assert "0" not in seen and seen[-1] == "ffff"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _bad_tokens(good: str) -> list[str]:
    return [
        "not a token!",  # not base64url
        "5",  # an audit-listing token
        "3f2b8c1e-5d4a-4f7e-9a0b-1c2d3e4f5a6b",  # an entry ID
        good + "=",  # padded: not the form handed out
        "A" + good[1:] if good[0] != "A" else "B" + good[1:],  # altered tag
        good + "\u00e9",  # non-ASCII
        _b64(b"rev1:serial"),  # no value part
        _b64(b"rev1:serial:"),  # empty value
        _b64(b"rev1:x509:0002"),  # unknown kind
        _b64(b"rev2:serial:0002"),  # another token version
        _b64(b"rev1:serial:\xff\xfe"),  # not UTF-8
        _b64(b"serial:0002"),  # the previous, unversioned form
    ]


def test_bad_tokens_are_refused_with_the_field_named(store: SqlDataStore) -> None:
    _fill(store)
    good = store.list_revocations_page(now=NOW, page=Page(size=2)).next_token
    assert store.list_revocations_page(now=NOW, page=Page(token=good, size=2)).items  # the good one works
    for bad in _bad_tokens(good):
        with pytest.raises(InvalidArgumentError) as info:
            store.list_revocations_page(now=NOW, page=Page(token=bad, size=2))
        assert (info.value.field, info.value.reason) == ("page_token", "not a token of this listing"), bad
    assert [r.value for r in store.list_revocations_page(now=NOW, page=Page(token=_b64(b"rev1:serial:0002"),
                                                                            size=2)).items] == ["0004", "0006"]
