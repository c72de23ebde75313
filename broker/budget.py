"""Per caller and upstream budgets: requests per minute and tokens per UTC day (pure; ``now`` injected).

::

    budgets = Budgets()
    refusal = budgets.check(key, upstream, now=now)    # None, or Exhausted(rule, retry_after seconds)
    budgets.count_request(key, now=now)
    budgets.add_tokens(key, 1234, now=now)               # from the provider's usage, streamed ones included
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from spiffe_broker.config import Upstream

WINDOW = timedelta(minutes=1)
MAX_KEYS = 100_000  # (caller, upstream) pairs tracked; the least recently seen is forgotten first

Key = tuple[str, str]  # (caller SPIFFE ID, upstream name)


@dataclass(frozen=True, slots=True)
class Exhausted:
    """A refused request: which budget, and when to try again (whole seconds, at least 1)."""

    rule: str
    retry_after: int
    message: str


@dataclass(slots=True)
class _Usage:
    requests: deque[datetime] = field(default_factory=deque)  # times of the requests of the last minute
    day: str = ""  # the UTC day the token count is for
    tokens: int = 0


def _day(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def _until_tomorrow(now: datetime) -> int:
    now = now.astimezone(UTC)
    tomorrow = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return max(1, int((tomorrow - now).total_seconds() + 0.999))


class Budgets:
    """Usage so far per (caller, upstream); owned by the event loop (no locks)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._usage: OrderedDict[Key, _Usage] = OrderedDict()
        self._max = max_keys

    def _get(self, key: Key, now: datetime) -> _Usage:
        usage = self._usage.get(key)
        if usage is None:
            usage = self._usage[key] = _Usage()
            while len(self._usage) > self._max:
                self._usage.popitem(last=False)
        self._usage.move_to_end(key)
        while usage.requests and now - usage.requests[0] >= WINDOW:
            usage.requests.popleft()
        if usage.day != _day(now):
            usage.day, usage.tokens = _day(now), 0
        return usage

    def snapshot(self, key: Key, *, now: datetime) -> dict[str, int]:
        """The caller's usage so far, for the policy document."""
        usage = self._get(key, now)
        return {"requests_last_minute": len(usage.requests), "tokens_today": usage.tokens}

    def check(self, key: Key, upstream: Upstream, *, now: datetime) -> Exhausted | None:
        """Refuse when a budget of ``upstream`` is used up for this caller."""
        usage = self._get(key, now)
        if upstream.requests_per_minute and len(usage.requests) >= upstream.requests_per_minute:
            wait = usage.requests[0] + WINDOW - now
            return Exhausted("requests_per_minute", max(1, int(wait.total_seconds() + 0.999)),
                             f"budget: {upstream.requests_per_minute} requests per minute to {upstream.name!r} used up")
        if upstream.tokens_per_day and usage.tokens >= upstream.tokens_per_day:
            return Exhausted("tokens_per_day", _until_tomorrow(now),
                             f"budget: {upstream.tokens_per_day} tokens per day at {upstream.name!r} used up")
        return None

    def count_request(self, key: Key, *, now: datetime) -> None:
        """Count one admitted request."""
        self._get(key, now).requests.append(now)

    def add_tokens(self, key: Key, tokens: int, *, now: datetime) -> None:
        """Add tokens the provider reported for one response."""
        if tokens > 0:
            self._get(key, now).tokens += tokens
