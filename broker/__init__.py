"""spiffe-broker: an AI credential broker; callers present SPIFFE SVIDs, the provider key stays here.

Installed as ``spiffe_broker``. It imports only ``spiffe_py`` (never the server or the agent) and
is itself a workload of the local agent. See docs/broker.md.
"""
