"""A real spiffe-agent's Workload API socket under an oversized request (64 KiB default limit)."""

from __future__ import annotations

import os

from tests.integration.server.test_serving_limits import RESOURCE_EXHAUSTED, MiB, rss_bytes
from tests.support.agent_proc import AgentProc
from tests.support.raw_grpc import announce_oversized, unix_connect, wait_closed
from tests.support.server_proc import ServerProc

SECURITY_HEADER = ("workload.spiffe.io", "true")


def test_workload_api_request_announcing_600_mib_is_refused_on_its_prefix() -> None:
    """A local caller announces a 600 MiB FetchJWTSVID request and streams 64 MiB of it: the agent
    answers RESOURCE_EXHAUSTED naming its 64 KiB limit, lets about one 64 KiB window in, stays
    small, closes the connection, and keeps serving."""
    with ServerProc.start() as srv, AgentProc.start(srv, "a1") as agent:
        srv.cli("entry", "create", "--spiffe-id", f"spiffe://{srv.trust_domain}/w", "--parent-id", agent.agent_id,
                "--selector", f"unix:uid:{os.geteuid()}")
        agent.wait_ready()
        assert agent.proc is not None
        pid = agent.proc.pid
        before = rss_bytes(pid)
        during: list[int] = []
        with unix_connect(str(agent.socket_path)) as sock:
            result = announce_oversized(sock, "/SpiffeWorkloadAPI/FetchJWTSVID", announced=600 * MiB,
                                        body_bytes=64 * MiB, metadata=[SECURITY_HEADER],
                                        on_sent=lambda: during.append(rss_bytes(pid)))
            closed = wait_closed(sock, 10.0)
        grown = during[0] - before
        assert result.status == RESOURCE_EXHAUSTED, result
        assert result.message is not None and "629145600" in result.message and "65536" in result.message
        assert result.sent <= 256 * 1024, f"the agent let {result.sent} body bytes in"
        assert grown < 16 * MiB, f"agent RSS grew by {grown / MiB:.1f} MiB"
        assert closed or result.closed or result.goaway
        assert agent.healthcheck().returncode == 0
