"""The guard's configuration tables (pure): ``[rate_limit]``, ``[uid_rate_limit]``, ``[anomaly]``.

::

    settings = GuardSettings(policy_file=path, rate_limit=rate_limit_config(raw.get("rate_limit")),
                             uid_rate_limit=uid_rate_limit_config(raw.get("uid_rate_limit")),
                             anomaly=anomaly_config(raw.get("anomaly")))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from spiffe_agent.anomaly import AnomalyConfig
from spiffe_agent.errors import AgentConfigError
from spiffe_agent.ratelimit import Limit, RateLimitConfig

# per caller uid, on unless [uid_rate_limit] enabled = false: no real workload comes near 50 calls/s
# sustained (SVIDs are cached and streamed), while a flood from one uid cannot outrun the audit trail
DEFAULT_UID_LIMIT = Limit(rate=50.0, burst=200)
_ANOMALY_KEYS = {"learning_period", "window", "alpha", "spike_factor", "min_windows", "min_count", "enabled"}
_SECONDS_KEYS = ("learning_period", "window")


def _limit(value: object, where: str) -> Limit:
    if not isinstance(value, Mapping) or set(value) != {"rate", "burst"}:
        raise AgentConfigError(f"config: {where} must be a table {{rate = R, burst = B}}")
    rate, burst = value["rate"], value["burst"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or isinstance(burst, bool) or not isinstance(
        burst, int
    ):
        raise AgentConfigError(f"config: {where}: rate must be a number and burst an integer")
    try:
        return Limit(rate=float(rate), burst=burst)
    except ValueError as err:
        raise AgentConfigError(f"config: {where}: {err}") from err


def rate_limit_config(table: Mapping[str, Any] | None) -> RateLimitConfig | None:
    """``[rate_limit]`` → RateLimitConfig (None = off); AgentConfigError on bad values."""
    if table is None:
        return None
    unknown = sorted(set(table) - {"default", "label", "by_label"})
    if unknown or "default" not in table:
        raise AgentConfigError(f"config: [rate_limit] needs 'default'; unknown keys: {unknown!r}")
    label = table.get("label")
    by_label = table.get("by_label", {})
    if (label is not None and not isinstance(label, str)) or not isinstance(by_label, Mapping):
        raise AgentConfigError("config: [rate_limit] label must be a string and by_label a table")
    if by_label and label is None:
        raise AgentConfigError("config: [rate_limit] by_label needs label")
    limits = {str(k): _limit(v, f"rate_limit.by_label.{k}") for k, v in by_label.items()}
    return RateLimitConfig(default=_limit(table["default"], "rate_limit.default"), label=label, by_label_value=limits)


def uid_rate_limit_config(table: Mapping[str, Any] | None) -> Limit | None:
    """``[uid_rate_limit]`` rate, burst → Limit (DEFAULT_UID_LIMIT when absent; None when ``enabled = false``)."""
    table = dict(table or {})
    unknown = sorted(set(table) - {"rate", "burst", "enabled"})
    if unknown:
        raise AgentConfigError(f"config: [uid_rate_limit] unknown keys: {unknown!r}")
    enabled = table.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise AgentConfigError("config: [uid_rate_limit] enabled must be true or false")
    if not enabled:
        return None
    return _limit({"rate": DEFAULT_UID_LIMIT.rate, "burst": DEFAULT_UID_LIMIT.burst, **table}, "uid_rate_limit")


def anomaly_config(table: Mapping[str, Any] | None) -> AnomalyConfig | None:
    """``[anomaly]`` → AnomalyConfig (defaults when absent; None when ``enabled = false``)."""
    table = dict(table or {})
    unknown = sorted(set(table) - _ANOMALY_KEYS)
    if unknown:
        raise AgentConfigError(f"config: [anomaly] unknown keys: {unknown!r}")
    if table.pop("enabled", True) is False:
        return None
    try:
        for key in _SECONDS_KEYS:
            if key in table:
                table[key] = timedelta(seconds=float(table[key]))
        return AnomalyConfig(**table)
    except (TypeError, ValueError) as err:
        raise AgentConfigError(f"config: [anomaly]: {err}") from err


@dataclass(frozen=True, slots=True)
class GuardSettings:
    """What the guard enforces; built from AgentConfig by agent.app."""

    policy_file: Path | None = None
    rate_limit: RateLimitConfig | None = None
    uid_rate_limit: Limit | None = None  # AgentConfig turns it on (DEFAULT_UID_LIMIT)
    anomaly: AnomalyConfig | None = field(default_factory=AnomalyConfig)
    quarantine_on_anomaly: bool = False
