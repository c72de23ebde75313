"""Prometheus counters for the Workload API's per-request path.

A prometheus_client ``Counter`` child takes a lock and a few calls per increment; on a path run
for every request (and, between requests, with cold caches) that shows. A :class:`HotCounter`
is a dict of plain integers, written only from the event loop's thread; the registry reads it
when scraped (a collector), so the exposition is the same as a ``Counter``'s::

    DECISIONS = HotCounter("spiffe_agent_policy_decisions", "Workload API decisions", ("method", "decision"))
    DECISIONS.inc("FetchJWTSVID", "allow")     # exposed as spiffe_agent_policy_decisions_total{...} 1.0
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric


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
