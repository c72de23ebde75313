"""Agent failover between real spiffe-server processes.

Two servers share one PostgreSQL schema and one data dir (the same CA keys). One agent is given
both addresses. The server it syncs with is killed with SIGKILL, again and again (each killed
server is started again before the next round), while a workload fetches its X509-SVID every
50 ms: no fetch may fail, and the agent must sync with the other server within 5 s.

Node attestation tries every address: an agent whose first address has no server attests at
the second.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from grpclib.client import Channel

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc, free_port

HEADER = {"workload.spiffe.io": "true"}
TRIALS = int(os.environ.get("SPIFFE_PY_FAILOVER_TRIALS", "6"))
RECONNECT_LIMIT_S = 5.0
FETCH_INTERVAL_S = 0.05
AGENT_CONFIG = "[uid_rate_limit]\nenabled = false\n"  # the workload fetches 20 times a second for a minute


@dataclass
class Fetcher:
    """A workload fetching its X509-SVID every FETCH_INTERVAL_S on its own thread."""

    socket_path: Path
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    svids: set[bytes] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    async def _loop(self) -> None:
        while not self._stop.is_set():
            channel = Channel(path=str(self.socket_path))
            try:
                async with SpiffeWorkloadAPIStub(channel).FetchX509SVID.open(metadata=HEADER, timeout=5) as stream:
                    await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
                    msg = await stream.recv_message()
                    await stream.cancel()
                if msg is None or not msg.svids:
                    self.failures.append("no svid")
                else:
                    self.ok += 1
                    self.svids.add(msg.svids[0].x509_svid)
            except Exception as err:  # every failure counts, whatever it is
                self.failures.append(f"{type(err).__name__}: {err}")
            finally:
                channel.close()
            await asyncio.sleep(FETCH_INTERVAL_S)

    def __enter__(self) -> Fetcher:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)


def _kill(srv: ServerProc) -> None:
    assert srv.proc is not None
    srv.proc.kill()
    srv.proc.wait()
    srv.proc = None


def _wait_synced_with(agent: AgentProc, port: int, seen: int) -> float:
    """Seconds until the agent logs a (re)opened sync stream with 127.0.0.1:``port`` after log offset ``seen``."""
    start = time.monotonic()
    pattern = re.compile(rf"syncing with server 127\.0\.0\.1:{port} again")
    while time.monotonic() - start < 30:
        if pattern.search(agent.log_text()[seen:]):
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"agent did not sync with :{port} within 30 s:\n{agent.log_text()[seen:][-4000:]}")


def test_agent_fails_over_to_the_other_server_on_kill_9_and_workloads_see_no_error(pg_schema: str) -> None:
    with ServerProc.start(extra_args=["--database", pg_schema]) as a:
        b = ServerProc.start(extra_args=["--database", pg_schema], data_dir=a.data_dir,
                             socket_path=a.data_dir.parent / "b.sock")
        config = a.data_dir.parent / "agent.toml"
        config.write_text(AGENT_CONFIG)
        addresses = ("--server-address", f"127.0.0.1:{a.port}", "--server-address", f"127.0.0.1:{b.port}")
        try:
            with AgentProc.start(a, "ag", (*addresses, "--config", str(config))) as agent:
                a.cli("entry", "create", "--spiffe-id", "spiffe://example.org/failover",
                      "--parent-id", agent.agent_id, "--selector", f"unix:uid:{os.geteuid()}",
                      "--x509-svid-ttl", "10")  # rotates every ~5 s: minting goes on through the failovers
                agent.wait_ready()
                times: list[float] = []
                with Fetcher(agent.socket_path) as fetcher:
                    time.sleep(1)
                    current, other = a, b
                    for _ in range(TRIALS):
                        seen = len(agent.log_text())
                        _kill(current)
                        times.append(_wait_synced_with(agent, other.port, seen))
                        current.launch()  # back for the next round, when it is the one failed over to
                        current, other = other, current
                    # the 10 s SVID renews at half-life: wait (bounded) for a mint after the failovers,
                    # however quickly they went
                    deadline = time.monotonic() + 12
                    while len(fetcher.svids) <= 2 and time.monotonic() < deadline:
                        time.sleep(0.2)
                print(f"failover reconnect over {TRIALS} trials: p50 {statistics.median(times):.3f} s, "
                      f"p99 {statistics.quantiles(times, n=100, method='inclusive')[98]:.3f} s, "
                      f"max {max(times):.3f} s; all {[round(t, 3) for t in times]}; "
                      f"{fetcher.ok} fetches, {len(fetcher.failures)} failed, {len(fetcher.svids)} svids")
                assert fetcher.failures == [], fetcher.failures[:5]
                assert fetcher.ok > TRIALS * 20
                assert len(fetcher.svids) > 2, "no new svid was minted through the failovers"
                assert max(times) < RECONNECT_LIMIT_S, times
        finally:
            b.close()


def test_node_attestation_tries_every_server_address() -> None:
    dead = free_port()  # nothing listens there
    with ServerProc.start() as srv, AgentProc.start(
            srv, "ag", ("--server-address", f"127.0.0.1:{dead}", "--server-address", f"127.0.0.1:{srv.port}")) as agent:
        agent.wait_ready()
        log = agent.log_text()
        assert f"node attestation at 127.0.0.1:{dead} failed" in log
        assert f"at 127.0.0.1:{srv.port}" in log.split(f"node attestation at 127.0.0.1:{dead} failed", 1)[1]
