"""Request-time guardrails of the Workload API.

- :mod:`agent.guard.config`: the ``[rate_limit]``, ``[uid_rate_limit]`` and ``[anomaly]`` tables;
- :mod:`agent.guard.decision`: :class:`~agent.guard.decision.WorkloadGuard` and the per-stream gate;
- :mod:`agent.guard.audit`: the record of every decision and alert;
- :mod:`agent.guard.quarantine`: entries blocked here until the server's flag takes over.
"""
