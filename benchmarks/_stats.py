"""Timing helpers for benchmarks: per-call samples, median/p99, ratio against a same-run floor.

Absolute times depend on the machine, so every benchmark also times a floor (the raw
operation it cannot beat) in the same run and reports ratios against it::

    floor = time_calls("raw ECDSA P-256 sign", lambda: key.sign(b"x", ec.ECDSA(hashes.SHA256())))
    case = time_calls("sign X509-SVID", lambda: sign_svid(params))
    print_table([case], floor=floor)
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

DEFAULT_CALLS = 1000
DEFAULT_WARMUP = 50


@dataclass(frozen=True, slots=True)
class Result:
    """Per-call durations (seconds) of one benchmarked operation."""

    name: str
    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return median(self.samples)

    @property
    def p99(self) -> float:
        """99th percentile seconds per call."""
        return percentile(self.samples, 99)


def median(samples: Sequence[float]) -> float:
    """Median of the samples."""
    if not samples:
        raise ValueError("median of no samples")
    return statistics.median(samples)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q% of samples at or below it."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q!r}")
    ordered = sorted(samples)
    return ordered[math.ceil(q / 100 * len(ordered)) - 1]


def time_calls(name: str, fn: Callable[[], object], *, n: int = DEFAULT_CALLS, warmup: int = DEFAULT_WARMUP) -> Result:
    """Call fn `warmup` times untimed, then n times, timing each call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Result(name, tuple(samples))


async def time_async_calls(
    name: str, fn: Callable[[], Awaitable[object]], *, n: int = DEFAULT_CALLS, warmup: int = DEFAULT_WARMUP
) -> Result:
    """Await fn() `warmup` times untimed, then n times, timing each call (e.g. one RPC)."""
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - start)
    return Result(name, tuple(samples))


def format_table(results: Sequence[Result], *, floor: Result) -> str:
    """A fixed-width table: calls, median and p99 in µs, and both as multiples of the floor's."""
    header = f"{'operation':<40} {'calls':>7} {'median µs':>11} {'p99 µs':>11} {'x floor':>8} {'p99 x fl':>8}"
    lines = [header, "-" * len(header)]
    for result in (floor, *results):
        lines.append(
            f"{result.name:<40} {len(result.samples):>7} {result.median * 1e6:>11.1f} {result.p99 * 1e6:>11.1f}"
            f" {result.median / floor.median:>8.2f} {result.p99 / floor.p99:>8.2f}"
        )
    lines.append(f"floor = {floor.name!r}, measured in this run")
    return "\n".join(lines)


def print_table(results: Sequence[Result], *, floor: Result) -> None:
    """Print :func:`format_table` to stdout."""
    print(format_table(results, floor=floor))
