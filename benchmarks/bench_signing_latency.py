"""Admin RPC latency while one agent signs a large sync, with signing in-process vs in the worker pool.

Run: ``cd benchmarks && ../.venv/bin/python bench_signing_latency.py [--csrs 5000 --batch 500 --rounds 2]``.

For each mode (``signing_workers = 0``: signing on the event loop, as before the pool; the
default: one worker process per core) a real ``spiffe-server`` (SQLite) is started, an agent is
join-token attested with one entry, and that agent sends ``--csrs`` EC P-256 CSRs in
``--batch``-CSR BatchNewX509SVID calls, one after another, as an agent's first sync does. Meanwhile
an admin client on the Unix socket calls ``ListEntries`` (what ``entry show`` sends) every 10 ms.
Reported per mode: admin latency p50/p99/max while signing and when idle, and signing throughput.
Modes alternate for ``--rounds`` rounds (the box is shared and noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

from _agent_client import TRUST_DOMAIN, agent_channel, csr_for, enroll
from _stats import percentile
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from tests.support.server_proc import ServerProc

ADMIN_PERIOD_S = 0.01
MODES = {"in-process (signing_workers = 0)": "signing_workers = 0\n", "worker pool (default)": ""}


async def _admin_latencies(api: AdminAPIStub, stop: asyncio.Event) -> list[float]:
    samples = []
    while not stop.is_set():
        start = time.perf_counter()
        await api.ListEntries(admin_pb2.ListEntriesRequest(page_size=100))
        samples.append(time.perf_counter() - start)
        await asyncio.sleep(ADMIN_PERIOD_S)
    return samples


async def run_mode(config: str, csrs: Sequence[bytes], entry_batch: int) -> tuple[list[float], list[float], float]:
    """(admin latencies while signing, idle admin latencies, SVIDs per second) for one server."""
    srv = ServerProc.start(trust_domain=TRUST_DOMAIN, config_text=config)
    try:
        target = await enroll(srv)
        channel = Channel(path=str(srv.socket_path))
        api = AdminAPIStub(channel)
        try:
            stop = asyncio.Event()
            idle_task = asyncio.create_task(_admin_latencies(api, stop))
            await asyncio.sleep(2)
            stop.set()
            idle = await idle_task
            requests = [agent_pb2.BatchNewX509SVIDRequest(params=[
                agent_pb2.NewX509SVIDParams(entry_id=target.entry_id, csr=der) for der in csrs[i:i + entry_batch]])
                for i in range(0, len(csrs), entry_batch)]
            async with agent_channel(srv, target.agent, target.roots_pem) as stub:
                await stub.BatchNewX509SVID(requests[0])  # warm-up (workers started, CA sent)
                stop = asyncio.Event()
                busy_task = asyncio.create_task(_admin_latencies(api, stop))
                start = time.perf_counter()
                for request in requests:
                    response = await stub.BatchNewX509SVID(request)
                    if any(r.status_code != 0 for r in response.results):
                        raise RuntimeError(f"signing failed: {response.results[0]}")
                elapsed = time.perf_counter() - start
                stop.set()
                busy = await busy_task
        finally:
            channel.close()
    finally:
        srv.close()
    return busy, idle, len(csrs) / elapsed


def _ms(samples: Sequence[float], q: float) -> str:
    return f"{percentile(samples, q) * 1000:8.1f}"


async def main_async(args: argparse.Namespace) -> None:
    """Alternate the modes, print one line per run."""
    print("generating CSRs ...", flush=True)
    sid = f"spiffe://{TRUST_DOMAIN}/bench/workload"
    csrs = [csr_for(ec.generate_private_key(ec.SECP256R1()), sid) for _ in range(args.csrs)]
    print(f"{'mode':<36} {'busy p50':>8} {'p99':>8} {'max':>8} | {'idle p50':>8} {'p99':>8} | SVIDs/s  (ms)")
    for _ in range(args.rounds):
        for name, config in MODES.items():
            busy, idle, rate = await run_mode(config, csrs, args.batch)
            print(f"{name:<36} {_ms(busy, 50)} {_ms(busy, 99)} {_ms(busy, 100)} | {_ms(idle, 50)} {_ms(idle, 99)} |"
                  f" {rate:7.0f}  ({len(busy)} admin calls while signing)", flush=True)


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--csrs", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main_async(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
