"""Per-identity token buckets (issue 6 guardrails), with injected time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spiffe_agent.ratelimit import Limit, RateLimitConfig, RateLimiter
from spiffe_py._serving.buckets import LruDict

T0 = datetime(2026, 1, 1, tzinfo=UTC)
W1 = "spiffe://example.org/w1"
W2 = "spiffe://example.org/w2"


def test_burst_then_refill() -> None:
    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=2, burst=3)))
    assert [limiter.allow(W1, now=T0).allowed for _ in range(4)] == [True, True, True, False]
    denied = limiter.allow(W1, now=T0)
    assert denied.retry_after == timedelta(milliseconds=500)
    # half a second refills exactly one token at 2/s
    assert limiter.allow(W1, now=T0 + timedelta(milliseconds=500)).allowed
    assert not limiter.allow(W1, now=T0 + timedelta(milliseconds=500)).allowed
    # a long pause refills only up to the burst
    later = T0 + timedelta(hours=1)
    assert [limiter.allow(W1, now=later).allowed for _ in range(4)] == [True, True, True, False]


def test_buckets_are_per_identity() -> None:
    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=1, burst=1)))
    assert limiter.allow(W1, now=T0).allowed
    assert not limiter.allow(W1, now=T0).allowed
    assert limiter.allow(W2, now=T0).allowed


def test_limit_chosen_by_label_value() -> None:
    config = RateLimitConfig(
        default=Limit(rate=1, burst=5), label="tier", by_label_value={"batch": Limit(rate=1, burst=1)}
    )
    limiter = RateLimiter(config)
    batch = {"tier": "batch"}
    assert limiter.allow(W1, now=T0, labels=batch).allowed
    assert not limiter.allow(W1, now=T0, labels=batch).allowed
    for labels in (None, {}, {"tier": "web"}, {"other": "batch"}):
        assert config.limit_for(labels) == Limit(rate=1, burst=5)
    assert [limiter.allow(W2, now=T0, labels={"tier": "web"}).allowed for _ in range(6)] == [True] * 5 + [False]


def test_clock_stepping_back_mints_no_tokens() -> None:
    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=1, burst=1)))
    assert limiter.allow(W1, now=T0).allowed
    assert not limiter.allow(W1, now=T0 - timedelta(hours=1)).allowed
    assert not limiter.allow(W1, now=T0 + timedelta(milliseconds=999)).allowed
    assert limiter.allow(W1, now=T0 + timedelta(seconds=1)).allowed


def test_cost_and_invalid_limits() -> None:
    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=1, burst=4)))
    assert limiter.allow(W1, now=T0, cost=3).allowed
    assert limiter.allow(W1, now=T0, cost=2).retry_after == timedelta(seconds=1)
    # more than the burst is refused with the time the tokens would take, not an overflow
    over = limiter.allow(W2, now=T0, cost=6)
    assert not over.allowed and over.retry_after == timedelta(seconds=2)
    with pytest.raises(ValueError, match="cost must be at least 1"):
        limiter.allow(W1, now=T0, cost=0)
    with pytest.raises(ValueError, match="need rate > 0 and burst >= 1"):
        Limit(rate=0, burst=1)
    with pytest.raises(ValueError, match="need rate > 0 and burst >= 1"):
        Limit(rate=1, burst=0)


def test_identities_are_bounded_least_recent_forgotten() -> None:
    limiter = RateLimiter(RateLimitConfig(default=Limit(rate=1, burst=1), max_identities=2))
    assert limiter.allow(W1, now=T0).allowed
    assert limiter.allow(W2, now=T0).allowed
    assert limiter.allow("spiffe://example.org/w3", now=T0).allowed  # evicts w1
    assert limiter.allow(W1, now=T0).allowed  # fresh bucket
    assert not limiter.allow("spiffe://example.org/w3", now=T0).allowed


def test_lru_dict_put_returns_previous_and_evicts_oldest() -> None:
    lru: LruDict[str, int] = LruDict(2)
    assert lru.put("a", 1) is None
    assert lru.put("b", 2) is None
    assert lru.get_or_create("a", lambda: 99) == 1  # touch a
    assert lru.put("c", 3) is None  # evicts b
    assert "b" not in lru
    assert lru.put("a", 4) == 1
    assert len(lru) == 2
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        LruDict(0)
