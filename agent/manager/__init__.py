"""Agent manager: the workload cache and the sync loop with the server."""

from __future__ import annotations

__all__: list[str] = []
