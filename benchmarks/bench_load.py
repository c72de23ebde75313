"""Load test of one agent: 200 concurrent workloads (valid, no identity, malformed), then a burst of 2,000 connections.

Run: ``.venv/bin/python benchmarks/bench_load.py [--seconds 60]`` (as root, so some clients can run as ``nobody``).

A real ``spiffe-server`` and ``spiffe-agent`` run as subprocesses (the integration-test launcher, info
logging), with an entry for this process's uid. Client subprocesses (this file with ``--client``), each
with ``--tasks`` asyncio tasks and one connection per task, run for ``--seconds``:

* ``valid`` (2 processes): FetchJWTSVID and FetchX509SVID (up to the first message) in turn;
* ``nobody`` (1 process, uid/gid 65534, which no entry selects): FetchJWTSVID and FetchX509SVID,
  expecting PERMISSION_DENIED;
* ``malformed`` (1 process): garbage bytes on the socket, a wrong method path, no security header,
  undecodable protobuf, no request message, a 1 MiB request, a request announcing 600 MiB in its
  length prefix.

Then a ``burst`` process opens 2,000 connections at once, each making one FetchJWTSVID (valid).
Meanwhile the agent's open fds (``/proc/<pid>/fd``) and RSS are sampled every second.

Reported: throughput and p50/p99 of valid calls, their error count (must be 0), the status counts of
the other roles, fds and RSS over time. Exit 1 when a valid call failed (steady phase or burst), the
agent died, or RSS broke its bound:

* RSS at most ``baseline + 128 MiB`` at any time. The agent's state is per entry, not per call; per
  connection it keeps a few KiB (h2 state, a held /proc fd), so 2,200 connections are ~10-40 MiB. A
  request is bounded (64 KiB for the Workload API by design), so 50 malformed tasks with 1 MiB
  requests may hold ~50 MiB at once on code without message limits, and far more on code that
  buffers the 600 MiB announced (the failure this bound exists to catch).
* growth over the second half of the steady phase at most 32 MiB: a leak per call shows up as
  steady growth; allocator noise does not.

``--nofile`` (default 1024, a systemd service's soft limit) is the fd limit the server and agent
start with; the clients raise theirs to the hard limit.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import percentile
from bench_workload_api import HEADER, _fetch_jwt, _first_x509, quiet_env
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub

NOBODY = 65534
CALL_TIMEOUT = 10.0
BURST_TIMEOUT = 60.0
RSS_HEADROOM = 128 << 20
RSS_LEAK_BOUND = 32 << 20
ROLES = ("valid", "valid", "nobody", "malformed")
METHOD = "/SpiffeWorkloadAPI/FetchJWTSVID"


# --- client process --------------------------------------------------------------------------


class RawCodec(ProtoCodec):  # type: ignore[misc]
    """The protobuf codec, except that ``bytes`` go out as they are and replies come back undecoded."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message) if isinstance(message, bytes) else super().encode(message, message_type)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


def outcome(err: BaseException | None) -> str:
    """A short status name for a call's result."""
    if err is None:
        return "OK"
    if isinstance(err, GRPCError):
        return err.status.name
    if isinstance(err, asyncio.TimeoutError | TimeoutError):
        return "CLIENT_TIMEOUT"
    if isinstance(err, AttributeError) and "_transport" in str(err):
        return "CONNECTION_DROPPED"  # grpclib's client when the peer closed the connection before the call
    return type(err).__name__


class Tally:
    """Latencies of successful calls and status counts, per call kind."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = collections.defaultdict(list)
        self.status: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)

    def add(self, kind: str, seconds: float, err: BaseException | None) -> None:
        self.status[kind][outcome(err)] += 1
        if err is None:
            self.latency[kind].append(seconds)

    def to_json(self) -> dict[str, Any]:
        return {"latency": self.latency, "status": {k: dict(v) for k, v in self.status.items()}}


async def _timed(tally: Tally, kind: str, call: Any) -> BaseException | None:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(call, CALL_TIMEOUT)
    except Exception as err:  # counted by type: grpclib raises odd errors on a connection the peer dropped
        tally.add(kind, 0.0, err)
        return err
    tally.add(kind, time.perf_counter() - start, None)
    return None


async def identity_task(socket_path: str, deadline: float, tally: Tally) -> None:
    """FetchJWTSVID and FetchX509SVID in turn over one connection (a new one after a failure)."""
    channel = Channel(path=socket_path)
    stub = SpiffeWorkloadAPIStub(channel)
    i = 0
    try:
        while time.monotonic() < deadline:
            call = _fetch_jwt(stub) if i % 2 == 0 else _first_x509(stub)
            err = await _timed(tally, "jwt" if i % 2 == 0 else "x509", call)
            i += 1
            if err is not None and not isinstance(err, GRPCError):
                channel.close()
                channel = Channel(path=socket_path)
                stub = SpiffeWorkloadAPIStub(channel)
            if err is not None:
                await asyncio.sleep(0.05)  # a refused caller retries, but does not spin
    finally:
        channel.close()


def _frame(message: bytes, announced: int | None = None) -> bytes:
    return b"\x00" + struct.pack(">I", len(message) if announced is None else announced) + message


async def _garbage(socket_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(socket_path)
    try:
        writer.write(random.randbytes(random.randint(1, 4096)))
        await writer.drain()
        await asyncio.wait_for(reader.read(65536), 2.0)  # the agent answers (GOAWAY) or closes
    finally:
        writer.close()


async def _raw_call(channel: Channel, path: str, payload: bytes, metadata: dict[str, str] | None) -> None:
    async with channel.request(path, Cardinality.UNARY_UNARY, bytes, bytes, metadata=metadata) as stream:
        await stream.send_message(payload, end=True)
        await stream.recv_message()


async def _no_message(channel: Channel) -> None:
    """A unary call that ends its request stream without sending the request message."""
    # STREAM_UNARY on the client side only: grpclib's client refuses to end a unary request with no message
    async with channel.request(METHOD, Cardinality.STREAM_UNARY, bytes, bytes, metadata=HEADER) as stream:
        await stream.send_request(end=True)
        await stream.recv_message()


async def _announced_600mib(socket_path: str) -> None:
    """A FetchJWTSVID whose length prefix announces 600 MiB; 4 MiB of it are sent, then the stream is reset."""
    channel = Channel(path=socket_path, codec=RawCodec())
    try:
        async with channel.request(METHOD, Cardinality.UNARY_UNARY, bytes, bytes, metadata=HEADER) as stream:
            await stream.send_request()
            h2_stream = stream._stream  # the HTTP/2 stream: DATA frames past grpclib's own message framing
            await h2_stream.send_data(_frame(b"", 600 << 20))
            for _ in range(16):
                await h2_stream.send_data(b"\x0a" * (256 << 10))
            await stream.cancel()
    finally:
        channel.close()


async def malformed_task(socket_path: str, deadline: float, tally: Tally) -> None:
    """Malformed calls of every kind, picked at random, until the deadline."""
    valid = workload_pb2.JWTSVIDRequest(audience=["bench"]).SerializeToString()
    big = workload_pb2.JWTSVIDRequest(audience=["a" * (1 << 20)]).SerializeToString()
    kinds = {
        "garbage_bytes": lambda ch: _garbage(socket_path),
        "wrong_path": lambda ch: _raw_call(ch, "/SpiffeWorkloadAPI/NoSuchMethod", valid, HEADER),
        "no_security_header": lambda ch: _raw_call(ch, METHOD, valid, None),
        "bad_protobuf": lambda ch: _raw_call(ch, METHOD, random.randbytes(64), HEADER),
        "oversized_1mib": lambda ch: _raw_call(ch, METHOD, big, HEADER),
        "no_request_message": _no_message,
        "announced_600mib": lambda ch: _announced_600mib(socket_path),
    }
    channel = Channel(path=socket_path, codec=RawCodec())
    try:
        while time.monotonic() < deadline:
            kind = random.choice(list(kinds))
            err = await _timed(tally, kind, kinds[kind](channel))
            if err is not None and not isinstance(err, GRPCError):
                channel.close()
                channel = Channel(path=socket_path, codec=RawCodec())
    finally:
        channel.close()


async def burst(socket_path: str, connections: int, tally: Tally) -> float:
    """``connections`` connections at once, one FetchJWTSVID each; returns the wall time."""

    async def one() -> None:
        channel = Channel(path=socket_path)
        try:
            start = time.perf_counter()
            try:
                await asyncio.wait_for(_fetch_jwt(SpiffeWorkloadAPIStub(channel)), BURST_TIMEOUT)
            except Exception as err:  # counted by type, like _timed
                tally.add("burst_jwt", 0.0, err)
                return
            tally.add("burst_jwt", time.perf_counter() - start, None)
        finally:
            channel.close()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return time.perf_counter() - start


def run_client(role: str, socket_path: str, tasks: int, seconds: float) -> dict[str, Any]:
    """One client process's work; the result as JSON-able data."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if role == "nobody":
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    tally = Tally()
    extra: dict[str, Any] = {}

    async def main() -> None:
        if role == "burst":
            work = [asyncio.ensure_future(burst(socket_path, tasks, tally))]
            limit = BURST_TIMEOUT + 30
        else:
            deadline = time.monotonic() + seconds
            task = malformed_task if role == "malformed" else identity_task
            work = [asyncio.ensure_future(task(socket_path, deadline, tally)) for _ in range(tasks)]
            limit = seconds + 3 * CALL_TIMEOUT
        _, hung = await asyncio.wait(work, timeout=limit)
        # a task still running here is stuck in a call (wait_for waits for a cancelled grpclib call to
        # unwind, which can hang): counted, and left behind, since the process exits without cleanup
        extra["hung_tasks"] = len(hung)
        if role == "burst" and not hung:
            extra["wall_seconds"] = work[0].result()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    return {"role": role, **tally.to_json(), **extra}


# --- the run -----------------------------------------------------------------------------------


def agent_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def agent_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Client(NamedTuple):
    proc: subprocess.Popen[bytes]
    result: Path  # a file, not a pipe: a pipe read only at the end fills up (64 KiB) and blocks the client


def _spawn_client(role: str, socket_path: Path, tasks: int, seconds: float) -> Client:
    fd, result = tempfile.mkstemp(prefix=f"bench-load-{role}-", suffix=".json")
    os.close(fd)
    if role == "nobody":
        os.chown(result, NOBODY, NOBODY)  # that client writes it after dropping to uid 65534
    argv = [sys.executable, __file__, "--client", role, "--socket", str(socket_path), "--tasks", str(tasks),
            "--seconds", str(seconds), "--out", result]
    return Client(subprocess.Popen(argv), Path(result))


def _sample_until(clients: list[Client], pid: int, samples: list[tuple[float, int, int]], start: float) -> None:
    while any(c.proc.poll() is None for c in clients):
        with contextlib.suppress(OSError):
            samples.append((time.monotonic() - start, agent_fds(pid), agent_rss(pid)))
        time.sleep(1.0)


def _collect(clients: list[Client]) -> list[dict[str, Any]]:
    out = []
    for c in clients:
        c.proc.wait(timeout=BURST_TIMEOUT + 60)
        text = c.result.read_text()
        c.result.unlink()
        out.append(json.loads(text) if c.proc.returncode == 0 and text.strip() else {"role": "?", "latency": {},
                                                                                    "status": {"CRASHED": 1}})
    return out


def _merge(results: list[dict[str, Any]], role: str) -> Tally:
    tally = Tally()
    for r in results:
        if r["role"] != role:
            continue
        for kind, xs in r["latency"].items():
            tally.latency[kind].extend(xs)
        for kind, counts in r["status"].items():
            tally.status[kind].update(counts)
    return tally


def _latency_line(name: str, xs: list[float], seconds: float | None = None) -> str:
    if not xs:
        return f"  {name}: no successful calls"
    rate = f", {len(xs) / seconds:.0f}/s" if seconds else ""
    return (f"  {name}: {len(xs)} ok{rate}, p50 {percentile(xs, 50) * 1e3:.1f} ms, "
            f"p99 {percentile(xs, 99) * 1e3:.1f} ms")


def _status_line(name: str, tally: Tally) -> str:
    parts = [f"{kind} {dict(sorted(c.items()))}" for kind, c in sorted(tally.status.items())]
    return f"  {name}: " + ("; ".join(parts) or "none")


def report(args: argparse.Namespace, steady: list[dict[str, Any]], burst_result: dict[str, Any],
           samples: list[tuple[float, int, int]], baseline_rss: int, alive: bool) -> bool:
    """Print the report; True when it passes."""
    valid = _merge(steady, "valid")
    nobody, malformed, burst_tally = _merge(steady, "nobody"), _merge(steady, "malformed"), _merge([burst_result],
                                                                                                   "burst")
    crashed = sum(1 for r in steady if r["role"] == "?")
    hung = {role: sum(r.get("hung_tasks", 0) for r in [*steady, burst_result] if r["role"] == role)
            for role in ("valid", "nobody", "malformed", "burst")}
    valid_calls = sum(sum(c.values()) for c in valid.status.values())
    valid_errors = sum(n for c in valid.status.values() for s, n in c.items() if s != "OK")
    burst_errors = sum(n for s, n in burst_tally.status["burst_jwt"].items() if s != "OK")
    steady_samples = [s for s in samples if s[0] <= args.seconds]
    half = [rss for t, _, rss in steady_samples if t >= args.seconds / 2]
    leak = (half[-1] - half[0]) if len(half) > 1 else 0
    max_rss = max((rss for _, _, rss in samples), default=0)
    rss_ok = max_rss <= baseline_rss + RSS_HEADROOM and leak <= RSS_LEAK_BOUND

    print(f"load test: {args.seconds:.0f} s, {len(ROLES)} client processes x {args.tasks} tasks "
          f"({', '.join(ROLES)}), then a burst of {args.burst} connections; agent fd limit {args.nofile}")
    print("valid calls (steady phase):")
    print(_latency_line("FetchJWTSVID", valid.latency["jwt"], args.seconds))
    print(_latency_line("FetchX509SVID (first message)", valid.latency["x509"], args.seconds))
    print(f"  throughput {sum(len(x) for x in valid.latency.values()) / args.seconds:.0f} valid calls/s; "
          f"errors {valid_errors} of {valid_calls} ({(valid_errors / valid_calls if valid_calls else 0):.2%})")
    print(_status_line("valid statuses", valid))
    print(_status_line("nobody (no identity)", nobody))
    print(_status_line("malformed", malformed))
    if crashed:
        print(f"  {crashed} client process(es) crashed")
    print(f"  tasks stuck in a call at the end (client side): {hung}")
    print(f"burst: {args.burst} connections in {burst_result.get('wall_seconds', float('nan')):.1f} s")
    print(_latency_line("burst FetchJWTSVID", burst_tally.latency["burst_jwt"]))
    print(_status_line("burst statuses", burst_tally))
    print("agent fds / RSS over time (every 5th sample):")
    for t, fds, rss in samples[::5]:
        print(f"  t={t:5.0f}s fds={fds:5d} rss={rss / 2**20:7.1f} MiB")
    print(f"agent fds max {max((f for _, f, _ in samples), default=0)}; RSS baseline {baseline_rss / 2**20:.1f} MiB, "
          f"max {max_rss / 2**20:.1f} MiB (bound {(baseline_rss + RSS_HEADROOM) / 2**20:.1f}), growth over the "
          f"second half of the steady phase {leak / 2**20:.1f} MiB (bound {RSS_LEAK_BOUND / 2**20:.0f})")
    print(f"agent alive at the end: {alive}")
    stuck = hung["valid"] + hung["burst"]
    ok = valid_errors == 0 and burst_errors == 0 and valid_calls > 0 and rss_ok and alive and not crashed and not stuck
    print("PASS" if ok else "FAIL: " + ", ".join(
        why for why, bad in [("valid calls failed", valid_errors > 0), ("burst calls failed", burst_errors > 0),
                             ("no valid call", valid_calls == 0), ("RSS over its bound", not rss_ok),
                             ("agent died", not alive), ("a client crashed", bool(crashed)),
                             ("valid calls never returned", bool(stuck))] if bad))
    return ok


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("bench_load: run as root (the no-identity clients switch to uid 65534)", file=sys.stderr)
        return 2
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.nofile, hard), hard))  # inherited by server and agent
    # The valid clients and the burst all run as root, one uid: the per-uid caps (connections, calls/s)
    # would refuse most of them by design, so they are lifted here; they are tested on their own
    # (tests/integration/agent/test_agent_caller_identity.py, tests/unit/agent/test_uid_rate_limit.py).
    config = Path(tempfile.mkdtemp(prefix="bench-load-")) / "agent.toml"
    config.write_text(f"max_connections_per_uid = {args.burst + 1000}\n[uid_rate_limit]\nenabled = false\n")
    with quiet_env([("/bench", f"unix:uid:{os.geteuid()}")], ("--config", str(config))) as env:
        assert env.agent is not None
        pid = env.agent.pid
        warm = _spawn_client("valid", env.socket_path, 4, 2.0)
        _collect([warm])
        baseline = agent_rss(pid)
        samples: list[tuple[float, int, int]] = []
        start = time.monotonic()
        clients = [_spawn_client(role, env.socket_path, args.tasks, args.seconds) for role in ROLES]
        _sample_until(clients, pid, samples, start)
        steady = _collect(clients)
        burster = _spawn_client("burst", env.socket_path, args.burst, 0)
        _sample_until([burster], pid, samples, start)
        burst_result = _collect([burster])[0]
        time.sleep(2.0)
        samples.append((time.monotonic() - start, agent_fds(pid), agent_rss(pid)))
        alive = env.agent.poll() is None and _collect([_spawn_client("valid", env.socket_path, 1, 1.0)])[0][
            "status"].get("jwt", {}).get("OK", 0) > 0
        ok = report(args, steady, burst_result, samples, baseline, alive)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady phase")
    parser.add_argument("--tasks", type=int, default=50, help="concurrent tasks (connections) per client process")
    parser.add_argument("--burst", type=int, default=2000, help="connections opened at once after the steady phase")
    parser.add_argument("--nofile", type=int, default=1024, help="soft fd limit the server and agent start with")
    parser.add_argument("--client", choices=("valid", "nobody", "malformed", "burst"), help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        Path(args.out).write_text(json.dumps(run_client(args.client, args.socket, args.tasks, args.seconds)))
        os._exit(0)  # no event loop or channel cleanup: a hung call must not hang the process
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
