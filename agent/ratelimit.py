"""The agent's per-identity rate limits, keyed by SPIFFE ID; pure, time injected.

Each identity has a token bucket (spiffe_py._serving.buckets, shared with the server). The limit
can depend on one label of the identity's entry (for example ``tier``)::

    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=5, burst=10), label="tier",
                                          by_label_value={"batch": Limit(rate=0.5, burst=2)}))
    decision = limiter.allow("spiffe://td/w", now=clock.now(), labels={"tier": "batch"})
    if not decision.allowed: ...   # retry after decision.retry_after
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spiffe_py._serving.buckets import Bucket, LruDict, take


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


class RateLimiter:
    """Token buckets for up to ``max_identities`` SPIFFE IDs (least recently seen are forgotten)."""

    def __init__(self, config: RateLimitConfig) -> None:
        self.config = config
        self._buckets: LruDict[str, Bucket] = LruDict(config.max_identities)

    def allow(
        self, spiffe_id: str, *, now: datetime, labels: Mapping[str, str] | None = None, cost: int = 1
    ) -> RateDecision:
        """Take ``cost`` tokens from the identity's bucket if it has them."""
        if cost < 1:
            raise ValueError("ratelimit: cost must be at least 1")
        limit = self.config.limit_for(labels)
        bucket, wait = take(self._buckets.get(spiffe_id), cost, now=now, rate=limit.rate, burst=limit.burst)
        self._buckets.put(spiffe_id, bucket)  # a refused call keeps the refill up to now
        if not wait:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after=timedelta(seconds=(cost - bucket.tokens) / limit.rate))


__all__ = ["Limit", "RateDecision", "RateLimitConfig", "RateLimiter"]
