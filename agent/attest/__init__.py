"""Workload attestation: selectors for the process behind a Workload API call."""

from __future__ import annotations

from agent.attest.base import WorkloadAttestor, attest_all
from agent.attest.caller import CallerAttestor

__all__ = ["CallerAttestor", "WorkloadAttestor", "attest_all"]
