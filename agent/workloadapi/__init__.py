"""The SPIFFE Workload API served by the agent over its Unix socket."""

from __future__ import annotations

__all__: list[str] = []
