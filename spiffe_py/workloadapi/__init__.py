"""Workload API client library: endpoint parsing, clients, and self-updating sources.

::

    from spiffe_py.workloadapi import WorkloadApiClient, X509Source

    with X509Source.start(WorkloadApiClient(), timeout=10) as source:
        print(source.get_x509_svid().spiffe_id)
"""

from __future__ import annotations

from spiffe_py._backoff import Backoff, is_retryable
from spiffe_py.workloadapi._address import (
    ENDPOINT_ENV,
    Endpoint,
    endpoint_address,
    endpoint_from_env,
    parse_endpoint,
)
from spiffe_py.workloadapi._client import HEADER, AsyncWorkloadApiClient, Watch, WorkloadApiClient
from spiffe_py.workloadapi._convert import InvalidResponseError, X509BundlesUpdate, X509Context
from spiffe_py.workloadapi._revocations import RevocationState, watch_revocations
from spiffe_py.workloadapi._source import JwtSource, X509Source

__all__ = [
    "ENDPOINT_ENV",
    "HEADER",
    "AsyncWorkloadApiClient",
    "Backoff",
    "Endpoint",
    "InvalidResponseError",
    "JwtSource",
    "RevocationState",
    "Watch",
    "WorkloadApiClient",
    "X509BundlesUpdate",
    "X509Context",
    "X509Source",
    "endpoint_address",
    "endpoint_from_env",
    "is_retryable",
    "parse_endpoint",
    "watch_revocations",
]
