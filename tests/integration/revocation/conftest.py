"""A real spiffe-server with several spiffe-agent processes, driven through the CLI and Workload API."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

TD = "example.org"
WORKLOAD_ID = f"spiffe://{TD}/workload"
UID_SELECTOR = f"unix:uid:{os.geteuid()}"
WAIT_S = 30.0


@dataclass
class Cluster:
    """One server and its agents; every agent has a ``/workload`` entry for this test's uid."""

    server: ServerProc
    agents: list[AgentProc]

    def create_entry(self, agent: AgentProc, spiffe_id: str, *flags: str) -> str:
        """``entry create`` parented to ``agent`` for this uid; returns the entry id."""
        out = self.server.cli_json("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", agent.agent_id,
                                   "--selector", UID_SELECTOR, *flags)
        return str(out["id"])

    def dump(self) -> str:
        """Logs of every process, for failure messages."""
        parts = [("server", self.server.log_text())] + [(a.root.name, a.log_text()) for a in self.agents]
        return "\n".join(f"--- {name}\n{text[-4000:]}" for name, text in parts)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S, step: float = 0.02) -> float:
    """Poll until ``predicate`` holds; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_cluster(agent_count: int, agent_args: tuple[str, ...] = ()) -> Cluster:
    """Start a server and ``agent_count`` agents, each with a ``/workload`` entry, and wait until ready."""
    server = ServerProc.start(trust_domain=TD)
    cluster = Cluster(server, [])
    try:
        for i in range(agent_count):
            agent = AgentProc.start(server, f"agent{i}", agent_args)
            cluster.agents.append(agent)
            cluster.create_entry(agent, WORKLOAD_ID)
        for agent in cluster.agents:
            agent.wait_ready()
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """Stop every process and remove their files."""
    for agent in cluster.agents:
        agent.close()
    cluster.server.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    c = start_cluster(4)
    try:
        yield c
    finally:
        print(c.dump())
        stop_cluster(c)
