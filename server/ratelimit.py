"""Per-agent token buckets (the core is spiffe_py._serving.buckets, shared with the agent).

A request for ``n`` items takes ``n`` tokens or is refused whole, with the wait until it would fit::

    limiter = KeyedLimiter(rate=100.0, burst=20_000, what="signing")
    limiter.take(agent_id, 500, now=clock.now())     # raises RateLimitedError when refused
"""

from __future__ import annotations

import math
from datetime import datetime

from spiffe_py._serving.buckets import Bucket, refill, take
from spiffe_py.errors import SpiffeError

MAX_TRACKED = 10_000  # buckets kept before full ones are dropped (a full bucket is the same as none)


class RateLimitedError(SpiffeError):
    """A caller exceeded its rate; the message says which limit and when to retry."""


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
