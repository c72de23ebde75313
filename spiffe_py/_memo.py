"""The one memo helper of server and agent: a bounded table, dropped whole when its version moves.

Derived values (a leaf profile per CA and entry, a response per cache state) are memoised
against the version counter of what they derive from; a new version clears the table, so no
entry is ever stale and nothing needs per-key invalidation::

    memo: Memo[Identity, Profile] = Memo(max_size=4096)
    key = Identity(authority, subject)          # by object identity, the objects kept alive
    value = memo.get_or_build(key, lambda: build(...), version=cache.version)

Keys are any hashable value; :class:`Identity` keys by identity objects whose hash or equality
is costly (certificates, names) or undefined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, final

K = TypeVar("K")
V = TypeVar("V")


@final
class Identity:
    """A key made of objects compared by identity; it keeps them alive, so an id is never reused."""

    __slots__ = ("_hash", "_ids", "objects")

    def __init__(self, *objects: object) -> None:
        self.objects = objects
        # while two keys are alive their objects are, so equal ids mean the same objects
        self._ids = tuple(map(id, objects))
        self._hash = hash(self._ids)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and self._ids == other._ids


class Memo(Generic[K, V]):
    """Values by key, valid for one version of their source; at most ``max_size`` of them."""

    __slots__ = ("_max_size", "_values", "_version")

    def __init__(self, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("memo: max_size must be at least 1")
        self._max_size = max_size
        self._values: dict[K, V] = {}
        self._version = 0

    def get(self, key: K, *, version: int = 0) -> V | None:
        """The value memoised for ``key`` at ``version``, or None."""
        if version != self._version:
            return None
        return self._values.get(key)

    def put(self, key: K, value: V, *, version: int = 0) -> None:
        """Memoise ``value``; a new version, or a full table, starts the table afresh."""
        if version != self._version or len(self._values) >= self._max_size:
            self._values = {}
            self._version = version
        self._values[key] = value

    def get_or_build(self, key: K, build: Callable[[], V], *, version: int = 0) -> V:
        """The memoised value, or ``build()`` memoised now."""
        value = self.get(key, version=version)
        if value is None:
            value = build()
            self.put(key, value, version=version)
        return value

    def __len__(self) -> int:
        return len(self._values)
