"""Prometheus metrics of spiffe-agent, and the plain-integer counters and histograms of its per-request path.

A prometheus_client ``Counter`` child takes a lock and a few calls per increment; on a path run
for every request (and, between requests, with cold caches) that shows. A :class:`HotCounter`
is a dict of plain integers, written only from the event loop's thread; the registry reads it
when scraped (a collector), so the exposition is the same as a ``Counter``'s::

    DECISIONS = HotCounter("spiffe_agent_policy_decisions", "Workload API decisions", ("method", "decision"))
    DECISIONS.inc("FetchJWTSVID", "allow")     # exposed as spiffe_agent_policy_decisions_total{...} 1.0
    WORKLOAD_API_LATENCY.observe(0.0004, "FetchJWTSVID")

Expiry gauges are read from the running agent when scraped (:class:`ExpiryCollector`): they are
Unix timestamps, so an alert compares them with ``time()`` and the agent reads no clock for them.
Every metric is listed in docs/operations.md (a unit test checks that).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

# seconds: from a cached answer (well under a millisecond) to a call waiting on the server
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HotCounter:
    """A labelled counter whose increments are plain integer additions (one writer thread)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._counts: dict[tuple[str, ...], int] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, *labels: str) -> None:
        """Add one for ``labels`` (values in ``labelnames`` order)."""
        counts = self._counts
        counts[labels] = counts.get(labels, 0) + 1

    def value(self, *labels: str) -> int:
        """The count for ``labels`` (0 if never incremented)."""
        return self._counts.get(labels, 0)

    def collect(self) -> Iterator[Metric]:
        """The counter family, as the registry exposes it (``<name>_total``)."""
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, count in list(self._counts.items()):  # a copy: the loop thread may add a label set
            family.add_metric(list(labels), count)
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples (lets the registry check names at registration)."""
        yield CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)


class HotHistogram:
    """A labelled histogram whose observations are plain additions (one writer thread)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float] = LATENCY_BUCKETS, registry: CollectorRegistry | None = REGISTRY) -> None:
        if list(buckets) != sorted(buckets) or not buckets:
            raise ValueError("buckets must be sorted and non-empty")
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        self._counts: dict[tuple[str, ...], list[int]] = {}  # per bucket (not cumulative), then +Inf
        self._sums: dict[tuple[str, ...], float] = {}
        if registry is not None:
            registry.register(self)

    def observe(self, value: float, *labels: str) -> None:
        """Record ``value`` (seconds) for ``labels``."""
        counts = self._counts.get(labels)
        if counts is None:
            counts = self._counts[labels] = [0] * (len(self._bounds) + 1)
        counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sums[labels] = self._sums.get(labels, 0.0) + value

    def count(self, *labels: str) -> int:
        """How many values were observed for ``labels``."""
        return sum(self._counts.get(labels, ()))

    def collect(self) -> Iterator[Metric]:
        """The histogram family, as the registry exposes it (``_bucket``, ``_count``, ``_sum``)."""
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, counts in list(self._counts.items()):
            cumulative, buckets = 0, []
            for bound, n in zip((*self._bounds, float("inf")), list(counts), strict=True):
                cumulative += n
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(list(labels), buckets, self._sums.get(labels, 0.0))
        yield family

    def describe(self) -> Iterator[Metric]:
        """The family without samples."""
        yield HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)


@dataclass(frozen=True, slots=True)
class ExpiryReading:
    """What the expiry gauges show: the agent's own SVID and the cached workload SVIDs."""

    agent_svid_not_after: datetime | None  # None before attestation
    cached_svids: int
    earliest_cached_not_after: datetime | None  # None with no cached SVID
    expired_cached_svids: int
    ready: bool


class ExpiryCollector:
    """Gauges read at each scrape from the running agent (:meth:`watch`); none before it runs."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self._read: Callable[[], ExpiryReading] | None = None
        if registry is not None:
            registry.register(self)

    def watch(self, read: Callable[[], ExpiryReading]) -> None:
        """Take the gauges' values from ``read()`` from now on."""
        self._read = read

    def collect(self) -> Iterator[Metric]:
        """The gauges, from one reading."""
        families = {name: GaugeMetricFamily(name, doc) for name, doc in _EXPIRY_GAUGES.items()}
        r = self._read() if self._read is not None else None
        if r is not None:
            if r.agent_svid_not_after is not None:
                families["spiffe_agent_svid_expiry_timestamp_seconds"].add_metric(
                    [], r.agent_svid_not_after.timestamp())
            if r.earliest_cached_not_after is not None:
                families["spiffe_agent_cached_svid_earliest_expiry_timestamp_seconds"].add_metric(
                    [], r.earliest_cached_not_after.timestamp())
            families["spiffe_agent_cached_svids"].add_metric([], r.cached_svids)
            families["spiffe_agent_cached_svids_expired"].add_metric([], r.expired_cached_svids)
            families["spiffe_agent_ready"].add_metric([], 1 if r.ready else 0)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        """The families without samples."""
        for name, doc in _EXPIRY_GAUGES.items():
            yield GaugeMetricFamily(name, doc)


_EXPIRY_GAUGES = {
    "spiffe_agent_svid_expiry_timestamp_seconds": "When the agent's own X509-SVID expires (Unix seconds)",
    "spiffe_agent_cached_svid_earliest_expiry_timestamp_seconds":
        "When the first of the cached workload X509-SVIDs expires (Unix seconds)",
    "spiffe_agent_cached_svids": "Workload X509-SVIDs in the agent's cache",
    "spiffe_agent_cached_svids_expired": "Cached workload X509-SVIDs past their expiry (never served)",
    "spiffe_agent_ready": "1 when /ready would answer 200: identity valid, synced, no cached SVID expired",
}

# -- the agent's own metrics ------------------------------------------------------------------
WORKLOAD_API_LATENCY = HotHistogram(
    "spiffe_agent_workload_api_latency_seconds",
    "Workload API latency by method: a unary call to its reply, a stream to its first message", ("method", "code"))
AGENT_API_LATENCY = HotHistogram(
    "spiffe_agent_server_api_latency_seconds",
    "Latency of the agent's calls to the server's Agent API by method and result", ("method", "code"))
SYNC_ERRORS = HotCounter(
    "spiffe_agent_sync_errors",
    "Failures keeping in step with the server by kind: stream (sync stream), mint (workload SVIDs), "
    "renewal (the agent's own SVID)", ("kind",))
EXPIRY = ExpiryCollector()
