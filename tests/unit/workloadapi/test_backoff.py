"""Retry policy of watch streams (pure; WA-04, WE-05, WE-13..WE-15)."""

from __future__ import annotations

import random

import pytest

from spiffe_py._backoff import Backoff, RetryState, is_retryable


def test_delay_grows_exponentially_without_jitter() -> None:
    policy = Backoff(initial=0.5, maximum=30.0, multiplier=2.0, jitter=0.0)
    assert [policy.delay(n, 0.3) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_delay_is_capped_even_for_huge_attempts() -> None:
    policy = Backoff(initial=1.0, maximum=10.0, jitter=0.5)
    assert policy.delay(10_000, 0.999) == 10.0


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 3.2), (0.5, 4.0), (0.999999, 4.8)])
def test_jitter_spreads_plus_minus_fraction(rand: float, expected: float) -> None:
    policy = Backoff(initial=0.5, maximum=30.0, jitter=0.2)
    assert policy.delay(3, rand) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs", [{"initial": 0.0}, {"initial": 5.0, "maximum": 1.0}, {"multiplier": 0.5}, {"jitter": 1.0}]
)
def test_bad_policy_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="backoff: need"):
        Backoff(**kwargs)


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        ("INVALID_ARGUMENT", False),  # WE-05
        ("UNIMPLEMENTED", False),  # WE-15
        ("UNAVAILABLE", True),  # WE-13
        ("PERMISSION_DENIED", True),  # WE-14
        ("UNKNOWN", True),
        ("CANCELLED", True),
    ],
)
def test_which_statuses_are_retried(status: str, retry: bool) -> None:
    assert is_retryable(status) is retry


def test_retry_state_backs_off_resets_on_update_and_reconnects_at_once_after_clean_end() -> None:
    state = RetryState(backoff=Backoff(initial=1.0, maximum=8.0, jitter=0.0), rng=random.Random(7))
    assert [state.on_error("UNAVAILABLE") for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    state.on_update()
    assert state.on_end() == 0.0  # WA-04: reconnect immediately after a stream that delivered
    assert state.on_end() == 1.0  # a stream that ended without delivering backs off
    assert state.on_error("UNAVAILABLE") == 2.0
    assert state.on_error("INVALID_ARGUMENT") is None


def test_retry_state_jitter_uses_injected_rng() -> None:
    policy = Backoff(initial=1.0, maximum=100.0, jitter=0.5)
    first = RetryState(backoff=policy, rng=random.Random(42))
    second = RetryState(backoff=policy, rng=random.Random(42))
    delays = [first.on_error("UNAVAILABLE") for _ in range(4)]
    assert delays == [second.on_error("UNAVAILABLE") for _ in range(4)]
    expected_rng = random.Random(42)
    assert delays == [policy.delay(n, expected_rng.random()) for n in range(4)]
