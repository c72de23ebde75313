"""A burst of local connects to a real agent's Workload API socket: none is refused by the listen backlog."""

from __future__ import annotations

import contextlib
import errno
import os
import socket

from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

BURST = 600


def test_a_burst_of_connects_fits_the_listen_backlog() -> None:
    """600 non-blocking connect() calls in a row, as an asyncio client makes them. A Unix socket whose
    listen backlog is full fails connect() at once with EAGAIN (grpclib's default backlog is 100), and
    the workload sees a dropped connection; the agent listens with a backlog the burst fits in."""
    with ServerProc.start() as srv, AgentProc.start(srv, "a1") as agent:
        agent.wait_ready()
        socks: list[socket.socket] = []
        refused = 0
        try:
            for _ in range(BURST):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                socks.append(sock)
                try:
                    sock.connect(str(agent.socket_path))
                except BlockingIOError as err:
                    assert err.errno == errno.EAGAIN
                    refused += 1
        finally:
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.close()
        assert refused == 0, f"{refused} of {BURST} connects refused (listen backlog full)"
        assert agent.healthcheck().returncode == 0
        assert os.path.exists(agent.socket_path)
