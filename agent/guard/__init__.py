"""Request-time guardrails of the Workload API.

- :mod:`spiffe_agent.guard.config`: the ``[rate_limit]``, ``[uid_rate_limit]`` and ``[anomaly]`` tables;
- :mod:`spiffe_agent.guard.decision`: :class:`~agent.guard.decision.WorkloadGuard` and the per-stream gate;
- :mod:`spiffe_agent.guard.audit`: the record of every decision and alert;
- :mod:`spiffe_agent.guard.quarantine`: entries blocked here until the server's flag takes over.
"""
