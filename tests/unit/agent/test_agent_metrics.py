"""HotCounter (agent/metrics.py): plain-int counters exposed like prometheus_client Counters."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from spiffe_agent.metrics import HotCounter


def test_exposition_matches_a_prometheus_counter() -> None:
    hot_registry, ref_registry = CollectorRegistry(), CollectorRegistry()
    hot = HotCounter("demo_decisions", "Decisions", ("method", "decision"), registry=hot_registry)
    ref = Counter("demo_decisions", "Decisions", ["method", "decision"], registry=ref_registry)
    for labels in [("FetchJWTSVID", "allow")] * 3 + [("FetchX509SVID", "deny")]:
        hot.inc(*labels)
        ref.labels(*labels).inc()
    assert hot.value("FetchJWTSVID", "allow") == 3 and hot.value("FetchJWTSVID", "deny") == 0

    def samples(text: bytes) -> set[str]:  # the reference also exposes a _created sample per label set
        return {line for line in text.decode().splitlines() if "_created" not in line}

    assert samples(generate_latest(hot_registry)) == samples(generate_latest(ref_registry))
    assert 'demo_decisions_total{decision="allow",method="FetchJWTSVID"} 3.0' in samples(generate_latest(hot_registry))


def test_names_are_checked_against_the_registry() -> None:
    registry = CollectorRegistry()
    HotCounter("dup_total_thing", "x", ("a",), registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        HotCounter("dup_total_thing", "x", ("a",), registry=registry)
