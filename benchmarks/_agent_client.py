"""Set up a real spiffe-server with one attested benchmark agent entitled to one workload entry.

Reuses the integration-test helpers (``tests/support/server_proc.py`` and
``tests/integration/server/agent_client.py``) so the benchmark drives the server exactly as
the tests do::

    with BenchServer.create(profile_path=None) as srv:
        target = await enroll(srv)
        async with agent_channel(srv, target.agent, target.roots_pem) as stub:
            await stub.BatchNewX509SVID(request)
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# tests/ is not an installed package; put the repo root on the path to reuse its helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.server.agent_client import (
    TestAgent,
    agent_channel,
    attest,
    csr_for,
    server_roots,
)
from tests.support.server_proc import ServerProc, free_port

__all__ = ["TRUST_DOMAIN", "BenchServer", "BenchTarget", "agent_channel", "csr_for", "enroll"]

TRUST_DOMAIN = "example.org"
WORKLOAD_PATH = "/bench/workload"


class BenchServer(ServerProc):
    """A ``spiffe-server`` subprocess (SQLite, tmp data dir, free port), optionally under cProfile."""

    def __init__(self, data_dir: Path, *, profile_path: Path | None) -> None:
        super().__init__(data_dir, trust_domain=TRUST_DOMAIN, port=free_port(), extra_args=(),
                         config_text=None, owns_dir=True)
        self.profile_path = profile_path

    @classmethod
    def create(cls, *, profile_path: Path | None) -> BenchServer:
        """Launch and wait until healthy; ``profile_path`` receives cProfile stats at stop."""
        srv = cls(Path(tempfile.mkdtemp(prefix="bench-ss-", dir="/tmp")) / "d", profile_path=profile_path)
        srv.launch()
        return srv

    def run_args(self) -> list[str]:
        """The ``run`` command line, wrapped in ``python -m cProfile`` when profiling."""
        args = super().run_args()
        if self.profile_path is None:
            return args
        # cProfile writes its stats when the server returns from SIGTERM's graceful stop.
        return [args[0], "-m", "cProfile", "-o", str(self.profile_path), *args[1:]]


@dataclass(frozen=True, slots=True)
class BenchTarget:
    """An attested agent, the entry it may sign for, and the trust bundle roots (PEM)."""

    agent: TestAgent
    entry_id: str
    spiffe_id: str
    roots_pem: str


async def enroll(srv: ServerProc) -> BenchTarget:
    """Join-token attest a benchmark agent and create one workload entry parented to it."""
    token = str(srv.cli_json("token", "generate")["value"])
    agent = await attest(srv, "join_token", token.encode())
    spiffe_id = f"spiffe://{TRUST_DOMAIN}{WORKLOAD_PATH}"
    entry = srv.cli_json("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", agent.spiffe_id,
                         "--selector", "unix:uid:1000")
    return BenchTarget(agent=agent, entry_id=str(entry["id"]), spiffe_id=spiffe_id, roots_pem=server_roots(srv))
