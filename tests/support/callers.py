"""Stand-ins for :class:`spiffe_agent.attest.caller.Caller` where an attestor reads only the pid."""

from __future__ import annotations

from typing import Any


class PidCaller:
    """A caller known only by its pid (the docker attestor reads nothing else)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


def pid_caller(pid: int) -> Any:
    """A :class:`PidCaller` typed for ``WorkloadAttestor.attest``."""
    return PidCaller(pid)
