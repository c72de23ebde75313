"""A real spiffe-server under unauthenticated resource attacks: oversized messages, connection floods.

Each test drives the server process over real sockets and reads its memory from /proc.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.raw_grpc import announce_oversized, tls_connect, unix_connect, wait_closed
from tests.support.server_proc import ServerProc

MiB = 1024 * 1024
ATTEST_AGENT = "/spiffepy.server.v1.AgentAPI/AttestAgent"
RESOURCE_EXHAUSTED = "8"


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture
def server() -> Iterator[ServerProc]:
    with ServerProc.start() as srv:
        yield srv


def test_attest_agent_message_announcing_600_mib_is_refused_on_its_prefix(server: ServerProc) -> None:
    """An unauthenticated peer announces 600 MiB to AttestAgent and streams 64 MiB of it.

    The server must answer RESOURCE_EXHAUSTED naming its 4 MiB limit after the 5-byte prefix,
    keep flow control shut (the peer cannot push much past one window), stay small, and then
    close the connection.
    """
    assert server.proc is not None
    pid = server.proc.pid
    before = rss_bytes(pid)
    during: list[int] = []
    with tls_connect(server.address) as sock:
        result = announce_oversized(sock, ATTEST_AGENT, announced=600 * MiB, body_bytes=64 * MiB,
                                    on_sent=lambda: during.append(rss_bytes(pid)))
        closed = wait_closed(sock, 10.0)
    grown = during[0] - before
    assert result.status == RESOURCE_EXHAUSTED, result
    assert result.message is not None and "629145600" in result.message and "4194304" in result.message
    assert result.sent < 16 * MiB, f"the server let {result.sent} body bytes in"
    assert grown < 32 * MiB, f"server RSS grew by {grown / MiB:.1f} MiB"
    assert closed or result.closed or result.goaway
    assert server.cli("healthcheck", check=False).returncode == 0


def test_admin_socket_message_over_the_admin_limit_is_refused(server: ServerProc) -> None:
    """The admin Unix socket applies the admin API limit on the prefix too."""
    assert server.proc is not None
    before = rss_bytes(server.proc.pid)
    with unix_connect(str(server.socket_path)) as sock:
        result = announce_oversized(sock, "/spiffepy.server.v1.AdminAPI/CreateEntry", announced=100 * MiB,
                                    body_bytes=32 * MiB)
    assert result.status == RESOURCE_EXHAUSTED, result
    assert result.sent < 16 * MiB
    assert rss_bytes(server.proc.pid) - before < 24 * MiB


def _healthcheck_seconds(srv: ServerProc) -> float:
    start = time.monotonic()
    cli = [sys.executable, "-m", "spiffe_server.cli"]
    result = subprocess.run([*cli, "healthcheck", "--socket-path", str(srv.socket_path)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - start


def open_fds(pid: int) -> int:
    """How many file descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """Children started inside inherit a soft RLIMIT_NOFILE of ``limit`` (a common default)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_1100_connections_that_never_handshake_do_not_exhaust_the_server() -> None:
    """1,100 TCP connections that never send a ClientHello, to a server started with 1024 fds.

    The server raises its fd limit, refuses what is over the per-IP cap at once (so it holds at
    most the cap), times the rest out, keeps answering healthcheck, stays small, and logs the
    flood in a few lines.
    """
    config = '[serving]\nmax_connections_per_ip = 100\ntls_handshake_timeout = "3s"\n'
    with soft_nofile(1024):
        srv = ServerProc.start(config_text=config)
    with srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        before_rss, before_fds = rss_bytes(pid), open_fds(pid)
        before_log = srv.log_path.stat().st_size
        socks: list[socket.socket] = []
        try:
            for _ in range(1100):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(srv.address)
                socks.append(sock)
            # refused connections are closed, not kept: apart from the batch being accepted (kernel SYN
            # retries bring the flood in waves), the server holds the 100 pending handshakes
            held = []
            for _ in range(6):
                time.sleep(0.5)
                held.append(open_fds(pid) - before_fds)
            assert sorted(held)[len(held) // 2] <= 100 + 10, f"the server held {held} more fds"
            assert _healthcheck_seconds(srv) < 5.0
            grown_rss = rss_bytes(pid) - before_rss
            # the pending handshakes time out; a legitimate TLS peer then gets through again
            time.sleep(3.5)
            with tls_connect(srv.address) as sock:
                result = announce_oversized(sock, ATTEST_AGENT, announced=5 * MiB, body_bytes=0)
            assert result.status == RESOURCE_EXHAUSTED, result
        finally:
            for sock in socks:
                sock.close()
        logged = srv.log_path.stat().st_size - before_log
        assert grown_rss < 48 * MiB, f"server RSS grew by {grown_rss / MiB:.1f} MiB"
        assert logged < 16 * 1024, f"the flood wrote {logged} bytes of log:\n{srv.log_text()[-3000:]}"
