"""Request-time guardrails of the Workload API: configuration, decisions, audit, quarantine.

- :mod:`agent.guard.config`: the ``[rate_limit]``, ``[uid_rate_limit]`` and ``[anomaly]`` tables;
- :mod:`agent.guard.decision`: :class:`WorkloadGuard` and the per-stream :class:`X509Gate`;
- :mod:`agent.guard.audit`: the record of every decision and alert;
- :mod:`agent.guard.quarantine`: entries blocked here until the server's flag takes over.
"""

from __future__ import annotations

from agent.guard.config import (
    DEFAULT_UID_LIMIT,
    GuardSettings,
    anomaly_config,
    rate_limit_config,
    uid_rate_limit_config,
)
from agent.guard.decision import (
    NO_POLICY,
    InvalidSubjectError,
    PolicyDeniedError,
    RateLimitedError,
    Verdict,
    WorkloadGuard,
    X509Gate,
    entry_facts,
    refusal,
    workload_facts,
)

__all__ = [
    "DEFAULT_UID_LIMIT",
    "NO_POLICY",
    "GuardSettings",
    "InvalidSubjectError",
    "PolicyDeniedError",
    "RateLimitedError",
    "Verdict",
    "WorkloadGuard",
    "X509Gate",
    "anomaly_config",
    "entry_facts",
    "rate_limit_config",
    "refusal",
    "uid_rate_limit_config",
    "workload_facts",
]
