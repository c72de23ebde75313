"""Thundering herd: 20 agents restarted at once all come back and serve; 1,000 workload
connections opened at once right after an agent restart are all served, with no error."""

from __future__ import annotations

import asyncio
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

from grpclib.client import Channel

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

TD = "spiffe://example.org"
HEADER = {"workload.spiffe.io": "true"}
AGENTS = 20
CONNECTIONS = 1000


async def _fetch_all(socket_path: str, n: int) -> tuple[int, list[str]]:
    """Open ``n`` FetchX509SVID streams at once (one connection each); (served, errors)."""
    async def one() -> str | None:
        channel = Channel(path=socket_path)
        try:
            async with SpiffeWorkloadAPIStub(channel).FetchX509SVID.open(metadata=HEADER, timeout=60) as stream:
                await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
                msg = await stream.recv_message()
                await stream.cancel()
            return None if msg is not None and msg.svids else "no svid"
        except Exception as err:  # every failure counts
            return f"{type(err).__name__}: {err}"
        finally:
            channel.close()

    results = await asyncio.gather(*(one() for _ in range(n)))
    errors = [r for r in results if r is not None]
    return n - len(errors), errors


def test_1000_workload_connections_at_once_after_an_agent_restart() -> None:
    with ServerProc.start() as srv:
        config = srv.data_dir.parent / "agent.toml"
        config.write_text(f"max_connections_per_uid = {CONNECTIONS + 100}\n[uid_rate_limit]\nenabled = false\n")
        with AgentProc.start(srv, "ag", ("--config", str(config))) as agent:
            srv.cli("entry", "create", "--spiffe-id", f"{TD}/w", "--parent-id", agent.agent_id,
                    "--selector", f"unix:uid:{os.geteuid()}")
            agent.wait_ready()
            agent.stop()
            agent.launch(("--config", str(config)))
            agent.wait_ready()
            t0 = time.monotonic()
            served, errors = asyncio.run(_fetch_all(str(agent.socket_path), CONNECTIONS))
            print(f"{served} of {CONNECTIONS} simultaneous fetches served in {time.monotonic() - t0:.1f} s")
            assert errors == [], errors[:5]
            assert served == CONNECTIONS


def test_20_agents_restarted_at_once_all_come_back() -> None:
    with ServerProc.start() as srv, ExitStack() as stack, ThreadPoolExecutor(AGENTS) as pool:
        # set up in parallel (each start runs a CLI for its join token), entries in one batch call
        agents = list(pool.map(lambda n: stack.enter_context(AgentProc.start(srv, f"ag{n}")), range(AGENTS)))
        doc = {"entries": [{"spiffe_id": f"{TD}/w{n}", "parent_id": agent.agent_id,
                            "selectors": [{"type": "unix", "value": f"uid:{os.geteuid()}"}]}
                           for n, agent in enumerate(agents)]}
        srv.cli("entry", "create", "--data", "-", stdin=json.dumps(doc).encode())
        list(pool.map(lambda agent: agent.wait_ready(), agents))
        list(pool.map(lambda agent: agent.stop(), agents))  # all down, then all up at once
        t0 = time.monotonic()
        for agent in agents:
            agent.launch()
        list(pool.map(lambda agent: agent.wait_ready(), agents))
        results = [asyncio.run(_fetch_all(str(agent.socket_path), 1)) for agent in agents]
        print(f"{AGENTS} agents back and serving in {time.monotonic() - t0:.1f} s")
        assert [r for r in results if r != (1, [])] == []
