"""An agent with more authorized entries than ``max_x509_svids`` keeps serving: a workload that
connects gets its SVID signed on demand, and the agent says so in its log (real server and agent)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.integration.agent.conftest import TD, running_env, x509_stream

LIMIT = 2


async def _fetch_ids(socket_path: Path) -> list[str]:
    async with x509_stream(socket_path) as stream:
        msg = await asyncio.wait_for(stream.recv_message(), 30)
        assert msg is not None
        return [svid.spiffe_id for svid in msg.svids]


def test_workload_beyond_the_cache_limit_is_served_on_demand(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f"max_x509_svids = {LIMIT}\n")
    others = [(f"/other{n}", f"unix:uid:{70000 + n}") for n in range(6)]
    mine = ("/mine", f"unix:uid:{os.geteuid()}")
    with running_env([*others, mine], extra_args=("--config", str(config))) as env:
        assert asyncio.run(_fetch_ids(env.socket_path)) == [f"spiffe://{TD}/mine"]
        log = env.dump()
        assert f"7 entries are authorized for this agent, more than max_x509_svids ({LIMIT})" in log
        assert "signed on demand" in log
