"""Retry policy for Workload API watch streams and the agent's server failover (pure; randomness injected).

Exponential, capped, jittered; INVALID_ARGUMENT (WE-05) and UNIMPLEMENTED (WE-15) are final::

    policy = Backoff(initial=0.5, maximum=30.0)
    delay = policy.delay(attempt=3, rand=0.5)   # 4.0 seconds
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# Statuses on which a client must not retry: WE-05 (INVALID_ARGUMENT), WE-15/WA-28 (UNIMPLEMENTED).
FINAL_STATUSES = frozenset({"INVALID_ARGUMENT", "UNIMPLEMENTED"})
_MAX_EXPONENT = 62  # keeps multiplier ** attempt finite


def is_retryable(status: str) -> bool:
    """Whether a watch that failed with gRPC ``status`` (code name) should be retried."""
    return status not in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``min(maximum, initial * multiplier**attempt)``, spread by ``±jitter``."""

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("backoff: need 0 < initial <= maximum")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("backoff: need multiplier >= 1 and 0 <= jitter < 1")

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based); ``rand`` is uniform in [0, 1)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, _MAX_EXPONENT))
        spread = 1.0 - self.jitter + 2.0 * self.jitter * rand
        return min(self.maximum, base * spread)


@dataclass(slots=True)
class RetryState:
    """Per-watch retry bookkeeping shared by the thread and asyncio loops."""

    backoff: Backoff = field(default_factory=Backoff)
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0
    updated: bool = False

    def on_update(self) -> None:
        """A message arrived: the next failure starts from the initial delay again."""
        self.attempt = 0
        self.updated = True

    def on_end(self) -> float:
        """The server closed the stream cleanly: reconnect at once if it had delivered (WA-04)."""
        if self.updated:
            self.updated = False
            return 0.0
        return self._next()

    def on_error(self, status: str) -> float | None:
        """Seconds to wait before reconnecting, or None when ``status`` is final."""
        self.updated = False
        return self._next() if is_retryable(status) else None

    def _next(self) -> float:
        delay = self.backoff.delay(self.attempt, self.rng.random())
        self.attempt += 1
        return delay
