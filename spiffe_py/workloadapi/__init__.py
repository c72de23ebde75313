"""Workload API client library: endpoint parsing, clients, and self-updating sources.

::

    from spiffe_py.workloadapi import parse_endpoint

    endpoint = parse_endpoint("unix:///tmp/agent.sock")
"""

from __future__ import annotations

from spiffe_py.workloadapi._address import ENDPOINT_ENV, Endpoint, endpoint_from_env, parse_endpoint
from spiffe_py.workloadapi._backoff import Backoff, is_retryable

__all__ = ["ENDPOINT_ENV", "Backoff", "Endpoint", "endpoint_from_env", "is_retryable", "parse_endpoint"]
