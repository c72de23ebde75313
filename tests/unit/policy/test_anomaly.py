"""Anomaly detectors (issue 6 guardrails): new audience, rate spike, changed binary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from spiffe_agent.anomaly import Alert, AlertKind, AnomalyConfig, AnomalyDetector, Observation

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # aligned to a minute window
W = "spiffe://example.org/w"
NODE = "spiffe://example.org/spire/agent/join_token/n1"


def kinds(alerts: list[Alert]) -> list[AlertKind]:
    return [a.kind for a in alerts]


def test_new_audience_after_learning_period() -> None:
    det = AnomalyDetector(AnomalyConfig(learning_period=timedelta(minutes=10)))
    assert det.observe(Observation(W, audiences=("db", "db")), now=T0) == []
    assert det.observe(Observation(W, audiences=("cache",)), now=T0 + timedelta(minutes=9)) == []
    late = T0 + timedelta(minutes=10)
    assert det.observe(Observation(W, audiences=("db", "cache")), now=late) == []
    alerts = det.observe(Observation(W, audiences=("payments", "db")), now=late)
    assert alerts == [Alert(AlertKind.NEW_AUDIENCE, W, {"audience": "payments"})]
    # only the first time
    assert det.observe(Observation(W, audiences=("payments",)), now=late) == []
    # baselines are per identity: a new identity is learning again
    assert det.observe(Observation("spiffe://example.org/other", audiences=("payments",)), now=late) == []


def test_audience_baseline_is_bounded() -> None:
    det = AnomalyDetector(AnomalyConfig(learning_period=timedelta(0), max_audiences=1))
    assert kinds(det.observe(Observation(W, audiences=("a",)), now=T0)) == [AlertKind.NEW_AUDIENCE]
    # baseline full: "b" is not remembered, so it alerts every time
    for _ in range(2):
        assert kinds(det.observe(Observation(W, audiences=("b",)), now=T0)) == [AlertKind.NEW_AUDIENCE]


def rate_config(**kw: object) -> AnomalyConfig:
    args: dict[str, object] = {"window": timedelta(minutes=1), "alpha": 0.5, "spike_factor": 3.0,
                               "min_windows": 3, "min_count": 5}
    args.update(kw)
    return AnomalyConfig(**args)  # type: ignore[arg-type]


def run_windows(det: AnomalyDetector, counts: list[int]) -> list[Alert]:
    alerts: list[Alert] = []
    for minute, count in enumerate(counts):
        for i in range(count):
            alerts += det.observe(Observation(W), now=T0 + timedelta(minutes=minute, seconds=i % 60))
    return alerts


def test_rate_spike_above_k_times_baseline() -> None:
    det = AnomalyDetector(rate_config())
    # baseline 4/min over three windows; then 12 is not > 3*4, 13 is
    assert run_windows(det, [4, 4, 4, 12]) == []
    det = AnomalyDetector(rate_config())
    alerts = run_windows(det, [4, 4, 4, 13])
    assert alerts == [Alert(AlertKind.RATE_SPIKE, W, {"count": "13", "baseline": "4.00", "window_seconds": "60"})]


def test_rate_spike_alerts_once_per_window() -> None:
    det = AnomalyDetector(rate_config())
    assert kinds(run_windows(det, [2, 2, 2, 40])) == [AlertKind.RATE_SPIKE]


def test_rate_needs_history_and_min_count() -> None:
    # only two completed windows: no alert however high the rate
    assert run_windows(AnomalyDetector(rate_config()), [1, 1, 50]) == []
    # baseline 0 but fewer than min_count requests
    assert run_windows(AnomalyDetector(rate_config()), [0, 0, 0, 4]) == []


def test_empty_windows_decay_the_baseline() -> None:
    det = AnomalyDetector(rate_config())
    run_windows(det, [8, 8, 8])  # baseline 8
    # windows 3..5 stay empty, each halving the baseline: 8 * 0.5**3 == 1
    alerts = det.observe(Observation(W), now=T0 + timedelta(minutes=6))
    assert alerts == []
    for i in range(1, 5):
        alerts += det.observe(Observation(W), now=T0 + timedelta(minutes=6, seconds=i))
    assert alerts == [Alert(AlertKind.RATE_SPIKE, W, {"count": "5", "baseline": "1.00", "window_seconds": "60"})]


def test_binary_change_for_same_entry_on_same_node() -> None:
    det = AnomalyDetector(AnomalyConfig())
    old, new = "aa" * 32, "bb" * 32
    assert det.observe(Observation(W, entry_id="e1", node=NODE, sha256=old), now=T0) == []
    assert det.observe(Observation(W, entry_id="e1", node=NODE, sha256=old), now=T0) == []
    # other node or other entry: independent baselines
    assert det.observe(Observation(W, entry_id="e1", node=NODE + "x", sha256=new), now=T0) == []
    assert det.observe(Observation(W, entry_id="e2", node=NODE, sha256=new), now=T0) == []
    alerts = det.observe(Observation(W, entry_id="e1", node=NODE, sha256=new), now=T0)
    assert alerts == [Alert(AlertKind.BINARY_CHANGED, W,
                            {"entry_id": "e1", "node": NODE, "previous": old, "current": new})]
    assert det.observe(Observation(W, entry_id="e1", node=NODE, sha256=new), now=T0) == []
    # unknown hash: nothing to compare
    assert det.observe(Observation(W, entry_id="e1", node=NODE), now=T0) == []


def test_invalid_config_refused() -> None:
    for bad in ({"alpha": 0.0}, {"spike_factor": 1.0}, {"window": timedelta(0)}):
        with pytest.raises(ValueError, match="anomaly: need 0 < alpha"):
            AnomalyConfig(**bad)
