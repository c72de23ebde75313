"""Token buckets and a bounded LRU table, shared by the server's and the agent's rate limits (pure).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request for ``n``
tokens takes them or is refused whole, with the wait until it would fit::

    bucket, wait = take(previous, 1, now=clock.now(), rate=5.0, burst=10)   # wait 0.0: allowed
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


class Bucket(NamedTuple):
    """Tokens left at ``at`` (a tuple: built once per request on hot paths)."""

    tokens: float
    at: datetime


def refill(bucket: Bucket | None, *, now: datetime, rate: float, burst: int) -> Bucket:
    """The bucket at ``now`` (a new key starts full; a clock going backwards adds nothing)."""
    if bucket is None:
        return Bucket(float(burst), now)
    elapsed = max(0.0, (now - bucket.at).total_seconds())
    return Bucket(min(float(burst), bucket.tokens + elapsed * rate), max(now, bucket.at))


def take(bucket: Bucket | None, n: int, *, now: datetime, rate: float, burst: int) -> tuple[Bucket, float]:
    """(the bucket after the request, 0.0) if ``n`` tokens were there, else (the refilled bucket, seconds to wait)."""
    # refill() inlined: this runs on every Workload API call
    if bucket is None:
        tokens, at = float(burst), now
    else:
        tokens, at = bucket
        elapsed = (now - at).total_seconds()
        if elapsed > 0:
            tokens, at = tokens + elapsed * rate, now
        if tokens > burst:
            tokens = float(burst)
    if n <= tokens:
        return Bucket(tokens - n, at), 0.0
    return Bucket(tokens, at), math.inf if n > burst else (n - tokens) / rate


class LruDict(Generic[K, V]):
    """A dict bounded to ``capacity`` entries that forgets the least recently used one."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        """The value for ``key`` (created if absent), marked most recently used."""
        if (found := self._items.get(key, _MISSING)) is not _MISSING:
            self._items.move_to_end(key)
            return found  # type: ignore[return-value]  # not the sentinel, so a V
        value = factory()
        self.put(key, value)
        return value

    def get(self, key: K) -> V | None:
        """The value for ``key``, or None (its place in the order is left as it is)."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> V | None:
        """Store ``value`` as most recently used; return the value it replaced, if any."""
        previous = self._items.pop(key, None)
        self._items[key] = value
        if len(self._items) > self._capacity:
            self._items.popitem(last=False)
        return previous

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
