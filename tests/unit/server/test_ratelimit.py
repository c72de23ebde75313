"""The per-agent token buckets (pure core and the keyed holder)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from spiffe_py._serving.buckets import Bucket, take
from spiffe_server.ratelimit import KeyedLimiter, RateLimitedError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_new_bucket_is_full_and_refills_at_the_rate() -> None:
    bucket, wait = take(None, 100, now=NOW, rate=10.0, burst=100)
    assert (bucket.tokens, wait) == (0.0, 0.0)
    same, wait = take(bucket, 5, now=NOW, rate=10.0, burst=100)
    assert same == bucket and wait == pytest.approx(0.5)  # refused whole: nothing taken
    bucket, wait = take(bucket, 5, now=NOW + timedelta(seconds=0.5), rate=10.0, burst=100)
    assert wait == 0.0 and bucket.tokens == pytest.approx(0.0)
    full, _ = take(bucket, 0, now=NOW + timedelta(days=1), rate=10.0, burst=100)
    assert full.tokens == 100.0  # never more than the burst


def test_more_than_the_burst_never_fits_and_a_clock_going_back_adds_nothing() -> None:
    assert take(None, 101, now=NOW, rate=10.0, burst=100)[1] == math.inf
    bucket = Bucket(0.0, NOW)
    assert take(bucket, 1, now=NOW - timedelta(hours=1), rate=10.0, burst=100)[0].tokens == 0.0


def test_keyed_limiter_is_per_key_and_says_when_to_retry() -> None:
    limiter = KeyedLimiter(rate=2.0, burst=4, what="signing")
    limiter.take("a", 4, now=NOW)
    with pytest.raises(RateLimitedError, match=r"signing rate exceeded for 'a': 1 requested, 0 available .* in 0\.5s"):
        limiter.take("a", 1, now=NOW)
    limiter.take("b", 4, now=NOW)  # another agent has its own bucket
    limiter.take("a", 1, now=NOW + timedelta(seconds=0.5))
    with pytest.raises(RateLimitedError, match="never"):
        limiter.take("a", 5, now=NOW)


def test_keyed_limiter_forgets_full_buckets_past_its_bound() -> None:
    limiter = KeyedLimiter(rate=1.0, burst=1, what="signing", max_tracked=2)
    for key in "abc":
        limiter.take(key, 1, now=NOW)
    assert len(limiter._buckets) == 3  # none full yet
    limiter.take("d", 1, now=NOW + timedelta(seconds=5))
    assert list(limiter._buckets) == ["d"]
