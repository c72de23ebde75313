"""spiffe_py._memo: identity keys, version invalidation, the size bound."""

from __future__ import annotations

import pytest

from spiffe_py._memo import Identity, Memo


def test_identity_keys_compare_objects_by_identity_not_equality() -> None:
    a, b = [1, 2], [1, 2]  # equal, unhashable, distinct
    assert Identity(a) == Identity(a)
    assert Identity(a) != Identity(b)
    assert Identity(a, b) != Identity(b, a)
    assert Identity(a) != Identity(a, a)
    assert hash(Identity(a, b)) == hash(Identity(a, b))


def test_a_new_version_drops_every_value() -> None:
    memo: Memo[str, int] = Memo(max_size=4)
    memo.put("x", 1, version=1)
    assert memo.get("x", version=1) == 1
    assert memo.get("x", version=2) is None
    memo.put("y", 2, version=2)
    assert memo.get("x", version=2) is None
    assert memo.get("x", version=1) is None  # an old version never comes back
    assert len(memo) == 1


def test_get_or_build_builds_once_per_key_and_version() -> None:
    memo: Memo[str, list[int]] = Memo(max_size=4)
    calls: list[str] = []

    def build() -> list[int]:
        calls.append("built")
        return [len(calls)]

    first = memo.get_or_build("k", build)
    assert memo.get_or_build("k", build) is first
    assert memo.get_or_build("k", build, version=1) is not first
    assert calls == ["built", "built"]


def test_the_table_is_bounded() -> None:
    memo: Memo[int, int] = Memo(max_size=3)
    for i in range(10):
        memo.put(i, i)
        assert len(memo) <= 3
    assert memo.get(9) == 9
    with pytest.raises(ValueError, match="max_size"):
        Memo(max_size=0)
