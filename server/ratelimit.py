"""Per-agent token buckets (pure core plus a small keyed holder).

A bucket holds up to ``burst`` tokens and refills at ``rate`` per second; a request for ``n``
items takes ``n`` tokens or is refused whole, with the wait until it would fit::

    limiter = KeyedLimiter(rate=100.0, burst=20_000, what="signing")
    limiter.take(agent_id, 500, now=clock.now())     # raises RateLimitedError when refused
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from spiffe_py.errors import SpiffeError

MAX_TRACKED = 10_000  # buckets kept before full ones are dropped (a full bucket is the same as none)


class RateLimitedError(SpiffeError):
    """A caller exceeded its rate; the message says which limit and when to retry."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """Tokens left at ``at``."""

    tokens: float
    at: datetime


def refill(bucket: Bucket | None, *, now: datetime, rate: float, burst: int) -> Bucket:
    """The bucket at ``now`` (a new key starts full; a clock going backwards adds nothing)."""
    if bucket is None:
        return Bucket(float(burst), now)
    elapsed = max(0.0, (now - bucket.at).total_seconds())
    return Bucket(min(float(burst), bucket.tokens + elapsed * rate), max(now, bucket.at))


def take(bucket: Bucket | None, n: int, *, now: datetime, rate: float, burst: int) -> tuple[Bucket, float]:
    """(the bucket after the request, 0.0) if ``n`` tokens were there, else (unchanged bucket, seconds to wait)."""
    current = refill(bucket, now=now, rate=rate, burst=burst)
    if n <= current.tokens:
        return Bucket(current.tokens - n, current.at), 0.0
    if n > burst:
        return current, math.inf
    return current, (n - current.tokens) / rate


class KeyedLimiter:
    """One bucket per key (agent SPIFFE ID); not thread-safe: call it from the event loop only."""

    def __init__(self, *, rate: float, burst: int, what: str, max_tracked: int = MAX_TRACKED) -> None:
        self.rate = rate
        self.burst = burst
        self.what = what
        self._max_tracked = max_tracked
        self._buckets: dict[str, Bucket] = {}

    def take(self, key: str, n: int, *, now: datetime) -> None:
        """Take ``n`` tokens from ``key``'s bucket; RateLimitedError (nothing taken) if they are not there."""
        bucket, wait = take(self._buckets.get(key), n, now=now, rate=self.rate, burst=self.burst)
        if wait:
            available = int(bucket.tokens)
            when = "never (more than the burst)" if math.isinf(wait) else f"in {wait:.1f}s"
            raise RateLimitedError(
                f"rate limit: {self.what} rate exceeded for {key!r}: {n} requested, {available} available "
                f"(at most {self.burst} at once, {self.rate:g}/s sustained); retry {when}")
        self._buckets[key] = bucket
        if len(self._buckets) > self._max_tracked:
            self._forget_full(now)

    def _forget_full(self, now: datetime) -> None:
        for key, bucket in list(self._buckets.items()):
            if refill(bucket, now=now, rate=self.rate, burst=self.burst).tokens >= self.burst:
                del self._buckets[key]
