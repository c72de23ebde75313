"""Issuance-side anomaly detection per SPIFFE ID; pure, time injected.

Three detectors, each returning :class:`Alert` values (the caller decides to log, page or deny):

* ``new_audience``: a JWT audience never requested before by this identity, once the identity is
  past its ``learning_period`` (audiences seen while learning form the baseline).
* ``rate_spike``: requests in the current fixed window exceed ``spike_factor`` times the identity's
  baseline, where the baseline is an EWMA (weight ``alpha``) of the counts of its completed
  windows, empty windows included. Needs ``min_windows`` completed windows and at least
  ``min_count`` requests in the window; at most one alert per identity per window.
* ``binary_changed``: the workload binary's sha256 differs from the last one seen for the same
  entry on the same node.

::

    detector = AnomalyDetector(AnomalyConfig())
    for alert in detector.observe(Observation("spiffe://td/w", audiences=("db",), entry_id="e1",
                                              node="spiffe://td/spire/agent/x", sha256=digest), now=now):
        log.warning("anomaly %s for %s: %s", alert.kind, alert.spiffe_id, alert.details)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from spiffe_py._serving.buckets import LruDict


class AlertKind(enum.StrEnum):
    """What looked unusual."""

    NEW_AUDIENCE = "new_audience"
    RATE_SPIKE = "rate_spike"
    BINARY_CHANGED = "binary_changed"


@dataclass(frozen=True, slots=True)
class Alert:
    """One anomaly for one identity."""

    kind: AlertKind
    spiffe_id: str
    details: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class AnomalyConfig:
    """Thresholds; the defaults suit a workload that fetches a few SVIDs a minute."""

    learning_period: timedelta = timedelta(hours=1)
    window: timedelta = timedelta(minutes=1)
    alpha: float = 0.3
    spike_factor: float = 5.0
    min_windows: int = 5
    min_count: int = 10
    max_identities: int = 100_000
    max_audiences: int = 1024

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1 or self.spike_factor <= 1 or self.window <= timedelta(0):
            raise ValueError("anomaly: need 0 < alpha <= 1, spike_factor > 1 and a positive window")


@dataclass(frozen=True, slots=True)
class Observation:
    """One issuance request as the detector sees it."""

    spiffe_id: str
    audiences: Sequence[str] = ()
    entry_id: str | None = None
    node: str | None = None
    sha256: str | None = None


@dataclass(slots=True)
class _Identity:
    first_seen: datetime
    audiences: set[str] = field(default_factory=set)
    window: int = 0
    count: int = 0
    completed: int = 0
    baseline: float | None = None
    alerted_window: int | None = None


class AnomalyDetector:
    """Keeps bounded per-identity baselines and reports what departs from them."""

    def __init__(self, config: AnomalyConfig) -> None:
        self.config = config
        self._window_seconds = config.window.total_seconds()
        self._identities: LruDict[str, _Identity] = LruDict(config.max_identities)
        self._binaries: LruDict[tuple[str, str], str] = LruDict(config.max_identities)

    def observe(self, obs: Observation, *, now: datetime) -> list[Alert]:
        """Record one request and return the alerts it raises (often none)."""
        state = self._identities.get_or_create(obs.spiffe_id, lambda: self._new_identity(now))
        alerts = self._audiences(obs, state, now)
        alerts += self._rate(obs.spiffe_id, state, now)
        alerts += self._binary(obs)
        return alerts

    def _new_identity(self, now: datetime) -> _Identity:
        return _Identity(first_seen=now, window=self._window_index(now))

    def _window_index(self, now: datetime) -> int:
        return math.floor(now.timestamp() / self._window_seconds)

    def _audiences(self, obs: Observation, state: _Identity, now: datetime) -> list[Alert]:
        known = state.audiences
        if all(audience in known for audience in obs.audiences):
            return []  # the common case, without the time arithmetic below
        learning = now - state.first_seen < self.config.learning_period
        alerts: list[Alert] = []
        for audience in dict.fromkeys(obs.audiences):
            if audience in state.audiences:
                continue
            if len(state.audiences) < self.config.max_audiences:
                state.audiences.add(audience)
            if not learning:
                alerts.append(Alert(AlertKind.NEW_AUDIENCE, obs.spiffe_id, {"audience": audience}))
        return alerts

    def _close_windows(self, state: _Identity, index: int) -> None:
        """Fold the finished window, then any empty ones, into the EWMA baseline."""
        alpha = self.config.alpha
        gap = index - state.window - 1
        if state.baseline is None:
            state.baseline = float(state.count)
        else:
            state.baseline += alpha * (state.count - state.baseline)
        state.baseline *= (1 - alpha) ** gap
        state.completed += index - state.window
        state.window, state.count = index, 0

    def _rate(self, spiffe_id: str, state: _Identity, now: datetime) -> list[Alert]:
        cfg = self.config
        index = self._window_index(now)
        if index > state.window:  # a clock that steps back keeps counting in the current window
            self._close_windows(state, index)
        state.count += 1
        baseline = state.baseline or 0.0
        if (
            state.completed < cfg.min_windows
            or state.count < cfg.min_count
            or state.count <= cfg.spike_factor * baseline
            or state.alerted_window == state.window
        ):
            return []
        state.alerted_window = state.window
        details = {
            "count": str(state.count),
            "baseline": f"{baseline:.2f}",
            "window_seconds": f"{cfg.window.total_seconds():g}",
        }
        return [Alert(AlertKind.RATE_SPIKE, spiffe_id, details)]

    def _binary(self, obs: Observation) -> list[Alert]:
        if obs.entry_id is None or obs.node is None or obs.sha256 is None:
            return []
        previous = self._binaries.put((obs.entry_id, obs.node), obs.sha256)
        if previous is None or previous == obs.sha256:
            return []
        details = {"entry_id": obs.entry_id, "node": obs.node, "previous": previous, "current": obs.sha256}
        return [Alert(AlertKind.BINARY_CHANGED, obs.spiffe_id, details)]


__all__ = ["Alert", "AlertKind", "AnomalyConfig", "AnomalyDetector", "Observation"]
