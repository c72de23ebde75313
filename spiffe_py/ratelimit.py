"""Per-identity token-bucket rate limiting, keyed by SPIFFE ID; pure, time injected.

Each identity has a bucket of ``burst`` tokens refilled at ``rate`` tokens per second. The limit
can depend on one label of the identity's entry (for example ``tier``)::

    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=5, burst=10), label="tier",
                                          by_label_value={"batch": Limit(rate=0.5, burst=2)}))
    decision = limiter.allow("spiffe://td/w", now=clock.now(), labels={"tier": "batch"})
    if not decision.allowed: ...   # retry after decision.retry_after
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
_MISSING = object()


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


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` tokens per second, at most ``burst`` at once."""

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError(f"ratelimit: need rate > 0 and burst >= 1: {self!r}")


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """The default limit, plus overrides chosen by the value of one entry label."""

    default: Limit
    label: str | None = None
    by_label_value: Mapping[str, Limit] = field(default_factory=dict)
    max_identities: int = 100_000

    def limit_for(self, labels: Mapping[str, str] | None) -> Limit:
        """The limit for an identity whose entry carries ``labels``."""
        if self.label is None or labels is None or self.label not in labels:
            return self.default
        return self.by_label_value.get(labels[self.label], self.default)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether the request may proceed; if not, when one token will be back."""

    allowed: bool
    retry_after: timedelta = timedelta(0)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: datetime


class RateLimiter:
    """Token buckets for up to ``max_identities`` SPIFFE IDs (least recently seen are forgotten)."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self._buckets: LruDict[str, _Bucket] = LruDict(config.max_identities)

    def allow(
        self, spiffe_id: str, *, now: datetime, labels: Mapping[str, str] | None = None, cost: int = 1
    ) -> RateDecision:
        """Take ``cost`` tokens from the identity's bucket if it has them."""
        if cost < 1:
            raise ValueError("ratelimit: cost must be at least 1")
        limit = self.config.limit_for(labels)
        bucket = self._buckets.get_or_create(spiffe_id, lambda: _Bucket(float(limit.burst), now))
        # a clock that steps back must not mint tokens, nor move the bucket's time backwards
        elapsed = max((now - bucket.updated).total_seconds(), 0.0)
        bucket.tokens = min(float(limit.burst), bucket.tokens + elapsed * limit.rate)
        bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after=timedelta(seconds=(cost - bucket.tokens) / limit.rate))


__all__ = ["Limit", "LruDict", "RateDecision", "RateLimitConfig", "RateLimiter"]
