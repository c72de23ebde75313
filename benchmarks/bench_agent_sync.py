"""A fresh agent with N entries, from its start until it holds every X509-SVID, vs the same-run signing floor.

Run: ``.venv/bin/python benchmarks/bench_agent_sync.py [--entries 10000] [--rounds 3] [--postgres] [--check]``.

Each round starts a fresh ``spiffe-server`` (a new data dir with SQLite, or a new schema in the
real PostgreSQL with ``--postgres``), creates N entries parented to a join-token agent through the
batch API (``entry create --data -``) before that agent exists, then starts the real
``spiffe-agent`` (``max_x509_svids`` = max(N, 1000), so it prefetches every SVID; log level info). Fresh
server and agent each round, so every round is the same cold join and no round's entries or
caches carry into the next. The agent is watched from outside through its Prometheus listener,
scraped every ``--poll`` seconds: ``spiffe_agent_x509_svid_entries`` reaching N is "synced",
``spiffe_agent_x509_svids_cached`` reaching N is "fully signed"; the "attested as" log line gives
the attestation time. Times are from the agent process start (its interpreter start included) and
from its attestation.

Split of the time, all observed from outside: the agent's own histogram of its
``BatchNewX509SVID`` calls (the wait on the server, summed), the server's handling of those calls
and its signing in the worker processes (server histograms), and the rest of the mint phase
(the mint phase less the summed waits). The agent keeps up to two 500-CSR batches at the server
while it builds the next in a thread, so the waits overlap its own work and that row can be
negative; it is shown only as a rough split. An in-process reference row times N ``new_key()`` + ``build_csr()``
(the agent's functions) alone. CPU seconds of the agent and of the server (main process and
signing workers) over the round, and after the full sync the VmRSS of the agent, the server's
main process and its signing workers (/proc/<pid>/status).

The floor, before each round (interleaved, as the box is noisy): ``floor_sign`` of
``bench_server_signing.py`` over N pre-generated EC P-256 CSRs in 500-CSR batches (load and
verify each CSR, build the same SPIFFE leaf template with cryptography's ``CertificateBuilder``,
sign with an EC P-256 CA key). It runs on one core; the server signs in one worker process per
core, so a ratio below 1 is possible and the ratio is against the single-core floor.

Target: a 10k-entry agent fully signed in <= 1.5x the floor. ``--check`` exits 1
when the median over rounds of (agent start -> all SVIDs) / floor is above 1.5. Each figure is
printed as the median and the maximum over the rounds.
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg
from bench_scale import rss_bytes
from bench_server_signing import floor_sign, make_batches, time_in_process
from bench_workload_api import cpu_seconds
from prometheus_client.parser import text_string_to_metric_families

from spiffe_agent.manager.identity import build_csr, new_key
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.nodeattest.join_token import join_token_agent_id
from tests.support.agent_proc import AgentProc
from tests.support.postgres import postgres_url
from tests.support.server_proc import ServerError, ServerProc, free_port

TRUST_DOMAIN = "example.org"
TARGET_RATIO = 1.5
CSR_BATCH = 500  # the agent's batch (spiffe_agent.manager.mint.CSR_BATCH)
SYNC_TIMEOUT = 900.0


@dataclass(slots=True)
class Metrics:
    """One scrape: summed values of the samples of each name, by label filter."""

    samples: list[tuple[str, dict[str, str], float]]

    @classmethod
    def parse(cls, text: str) -> Metrics:
        return cls([(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples])

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(v for n, lab, v in self.samples if n == name and labels.items() <= lab.items())


def scrape(port: int) -> Metrics | None:
    """The metrics on ``port``, or None while nothing listens there yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            return Metrics.parse(resp.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return None


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (the server's signing workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def attested_at(log_text: str) -> float:
    """Wall-clock time of the agent's "attested as" log line."""
    for line in log_text.splitlines():
        if " attested as " in line:
            return datetime.fromisoformat(line.split(" ", 1)[0]).timestamp()
    raise ServerError(f"no attestation line in the agent log:\n{log_text}")


@dataclass(slots=True)
class Round:
    """The figures of one round (seconds, bytes)."""

    floor: float
    keygen: float
    attested: float = 0.0
    synced: float = 0.0
    done: float = 0.0
    agent_rpc: float = 0.0
    server_rpc: float = 0.0
    server_sign: float = 0.0
    agent_cpu: float = 0.0
    server_cpu: float = 0.0
    workers_cpu: float = 0.0
    agent_rss: int = 0
    server_rss: int = 0
    workers_rss: int = 0
    workers: int = 0
    scrapes: list[float] = field(default_factory=list)

    @property
    def mint_rest(self) -> float:
        """The mint phase less the agent's summed waits on BatchNewX509SVID (overlapping waits can make it negative)."""
        return self.done - self.synced - self.agent_rpc


def floor_seconds(batches: Sequence[tuple[bytes, ...]], spiffe_id: str, n: int) -> float:
    """Seconds for ``floor_sign`` over ``n`` CSRs: every batch timed once after bench_server_signing's warm-up."""
    total = sum(time_in_process("floor", floor_sign, batches, spiffe_id, n=len(batches)).samples)
    return total * n / sum(len(b) for b in batches)


def keygen_seconds(n: int) -> float:
    """Seconds for the agent's key pair and CSR, ``n`` times, in this process."""
    sid = SpiffeId.parse(f"spiffe://{TRUST_DOMAIN}/sync/w0")
    start = time.perf_counter()
    for _ in range(n):
        build_csr(new_key(), sid)
    return time.perf_counter() - start


def entries_doc(agent_id: str, n: int) -> bytes:
    """The ``entry create --data -`` document: ``n`` workload entries under ``agent_id``."""
    return json.dumps(
        {
            "entries": [
                {
                    "spiffe_id": f"spiffe://{TRUST_DOMAIN}/sync/w{i}",
                    "parent_id": agent_id,
                    "selectors": [{"type": "unix", "value": f"uid:{10000 + i}"}],
                }
                for i in range(n)
            ]
        }
    ).encode()


def wait_for(
    port: int,
    name: str,
    n: int,
    labels: dict[str, str],
    *,
    agent: AgentProc,
    start: float,
    poll: float,
    rtts: list[float],
) -> tuple[float, Metrics]:
    """Scrape ``port`` every ``poll`` s until ``name`` (with ``labels``) reaches ``n``: (seconds since
    ``start``, that scrape). Appends each agent scrape's round trip to ``rtts``."""
    while True:
        if agent.proc is None or agent.proc.poll() is not None or time.perf_counter() - start > SYNC_TIMEOUT:
            raise ServerError(f"agent exited or not synced in {SYNC_TIMEOUT:.0f} s:\n{agent.log_text()[-4000:]}")
        t0 = time.perf_counter()
        metrics = scrape(port)
        now = time.perf_counter()
        if metrics is not None:
            if name.startswith("spiffe_agent_"):
                rtts.append(now - t0)
            if metrics.value(name, **labels) >= n:
                return now - start, metrics
        time.sleep(max(0.0, poll - (time.perf_counter() - t0)))


def run_agent(srv: ServerProc, server_metrics: int, n: int, poll: float, rnd: Round) -> None:
    """Create the entries, start the agent and watch it until it holds all ``n`` SVIDs; fill ``rnd``."""
    assert srv.proc is not None
    token = str(srv.cli_json("token", "generate")["value"])
    agent_id = str(join_token_agent_id(TrustDomain.parse(TRUST_DOMAIN), token))
    srv.cli("entry", "create", "--data", "-", stdin=entries_doc(agent_id, n))
    agent = AgentProc(srv, "agent", ("--join-token", token), agent_id)
    agent.root.mkdir(parents=True)
    (agent.root / "bootstrap.pem").write_text(srv.cli("bundle", "show").stdout)
    port = free_port()
    config = agent.root / "agent.toml"
    config.write_text(f"metrics_port = {port}\nmax_x509_svids = {max(n, 1000)}\n")
    servers = [srv.proc.pid, *children(srv.proc.pid)]
    main_cpu0, workers_cpu0 = cpu_seconds(servers[0]), sum(cpu_seconds(p) for p in servers[1:])
    try:
        wall0, start = time.time(), time.perf_counter()
        agent.launch(("--config", str(config), "--log-level", "info"))
        wait = functools.partial(wait_for, agent=agent, start=start, rtts=rnd.scrapes)
        rnd.synced, _ = wait(port, "spiffe_agent_x509_svid_entries", n, {}, poll=poll)
        # while the agent mints, scrape the server (a scrape costs the agent a pass over its cache) ...
        wait(server_metrics, "spiffe_server_ca_sign_total", n, {"kind": "x509"}, poll=poll)
        # ... then the agent, more often, while it stores the last batch
        rnd.done, metrics = wait(port, "spiffe_agent_x509_svids_cached", n, {}, poll=poll / 4)
        assert agent.proc is not None
        rnd.agent_cpu = cpu_seconds(agent.proc.pid)
        rnd.server_cpu = cpu_seconds(servers[0]) - main_cpu0
        rnd.workers_cpu = sum(cpu_seconds(p) for p in servers[1:]) - workers_cpu0
        rnd.agent_rss, rnd.server_rss = rss_bytes(agent.proc.pid), rss_bytes(srv.proc.pid)
        rnd.workers_rss, rnd.workers = sum(rss_bytes(p) for p in servers[1:]), len(servers) - 1
        errors = metrics.value("spiffe_agent_sync_errors_total")
        if errors:
            raise ServerError(f"the agent counted {errors:.0f} sync errors:\n{agent.log_text()[-4000:]}")
        rnd.agent_rpc = metrics.value("spiffe_agent_server_api_latency_seconds_sum", method="BatchNewX509SVID")
        rnd.attested = attested_at(agent.log_text()) - wall0
        on_server = scrape(server_metrics)
        assert on_server is not None
        rnd.server_rpc = on_server.value("spiffe_server_rpc_latency_seconds_sum", method="BatchNewX509SVID")
        rnd.server_sign = on_server.value("spiffe_server_ca_sign_latency_seconds_sum", kind="x509")
    finally:
        agent.close()


def one_round(args: argparse.Namespace, batches: Sequence[tuple[bytes, ...]], floor_id: str) -> Round:
    """The floor, then a fresh server and agent."""
    rnd = Round(floor=floor_seconds(batches, floor_id, args.entries), keygen=keygen_seconds(args.entries))
    extra: list[str] = []
    schema = f"bench_agent_sync_{secrets.token_hex(4)}"
    if args.postgres:
        with psycopg.connect(postgres_url(), autocommit=True) as conn:
            conn.execute(f"create schema {schema}")
        extra = ["--database", f"{postgres_url()}?options=-csearch_path%3D{schema}"]
    metrics_port = free_port()
    srv = ServerProc(
        Path(tempfile.mkdtemp(prefix="bench-sync-", dir="/tmp")) / "d",
        trust_domain=TRUST_DOMAIN,
        port=free_port(),
        extra_args=extra,
        config_text=f"[metrics]\nbind_port = {metrics_port}\n",
        owns_dir=True,
    )
    try:
        srv.launch()
        run_agent(srv, metrics_port, args.entries, args.poll, rnd)
    finally:
        srv.close()
        if args.postgres:
            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                conn.execute(f"drop schema {schema} cascade")
    return rnd


def report(rounds: Sequence[Round], n: int) -> float:
    """Print median and max of every figure; the median ratio (agent start -> all SVIDs) / floor."""
    mib = 2**20

    def row(label: str, get: Callable[[Round], float], unit: str = "s", scale: float = 1.0) -> list[float]:
        values = [get(r) / scale for r in rounds]
        print(f"{label:<62} {statistics.median(values):>9.2f} {max(values):>9.2f} {unit}")
        return values

    print(f"N={n} entries under one agent, {len(rounds)} rounds (fresh server and agent each)")
    print(f"{'':<62} {'median':>9} {'max':>9}")
    row(f"floor: CSR verify + build + sign, {n} CSRs, one core", lambda r: r.floor)
    row(f"reference: agent new_key + build_csr, {n}, in-process", lambda r: r.keygen)
    row("agent start -> attested (log line)", lambda r: r.attested)
    row("agent start -> all entries synced (metrics)", lambda r: r.synced)
    row("agent start -> all SVIDs held (metrics)", lambda r: r.done)
    row("attested -> all SVIDs held", lambda r: r.done - r.attested)
    row("  synced -> all SVIDs held (the mint phase)", lambda r: r.done - r.synced)
    row("    agent waits on BatchNewX509SVID (agent histogram sum)", lambda r: r.agent_rpc)
    row("      server handles BatchNewX509SVID (server histogram sum)", lambda r: r.server_rpc)
    row("        server signs in its workers (ca_sign x509 sum)", lambda r: r.server_sign)
    row("    mint phase less the summed waits (overlapped)", lambda r: r.mint_rest)
    row("agent CPU, start -> all SVIDs", lambda r: r.agent_cpu)
    row("server main process CPU, same span", lambda r: r.server_cpu)
    row("server signing workers CPU, same span", lambda r: r.workers_cpu)
    row("agent VmRSS after the full sync", lambda r: r.agent_rss, "MiB", mib)
    row("server main process VmRSS", lambda r: r.server_rss, "MiB", mib)
    row(f"server signing workers VmRSS (sum of {rounds[0].workers})", lambda r: r.workers_rss, "MiB", mib)
    row("scrapes of the agent's metrics (count)", lambda r: len(r.scrapes), "")
    row("  their total round-trip time", lambda r: sum(r.scrapes))
    ratios = row("ratio: agent start -> all SVIDs / floor", lambda r: r.done / r.floor, "x")
    row("ratio: attested -> all SVIDs / floor", lambda r: (r.done - r.attested) / r.floor, "x")
    ratio = statistics.median(ratios)
    verdict = "PASS" if ratio <= TARGET_RATIO else "MISS"
    print(
        f"target: median ratio (agent start -> all SVIDs) / single-core floor <= {TARGET_RATIO}: {ratio:.2f} "
        f"{verdict} (the server signs on {rounds[0].workers} worker processes, the floor on one core)"
    )
    return ratio


def main(argv: Sequence[str] = sys.argv[1:]) -> int:
    """Run the rounds and print the table; 1 only with ``--check`` and the target missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000, help="entries parented to the agent (N)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each a floor then a fresh server and agent")
    parser.add_argument("--poll", type=float, default=0.1, help="seconds between scrapes of the agent's metrics")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="PostgreSQL (a fresh schema in SPIFFE_PY_TEST_POSTGRES_URL's database) instead of SQLite",
    )
    parser.add_argument("--check", action="store_true", help=f"exit 1 when the median ratio is above {TARGET_RATIO}")
    args = parser.parse_args(argv)
    if args.entries < 1 or args.rounds < 1 or args.poll <= 0:
        parser.error("--entries and --rounds must be >= 1 and --poll > 0")
    floor_id = f"spiffe://{TRUST_DOMAIN}/sync/w0"
    batches = make_batches(floor_id, size=min(CSR_BATCH, args.entries), count=-(-args.entries // CSR_BATCH))
    rounds = []
    for i in range(args.rounds):
        rounds.append(one_round(args, batches, floor_id))
        r = rounds[-1]
        print(f"round {i + 1}: floor {r.floor:.2f} s, agent start -> all SVIDs {r.done:.2f} s", flush=True)
    ratio = report(rounds, args.entries)
    return 1 if args.check and ratio > TARGET_RATIO else 0


if __name__ == "__main__":
    sys.exit(main())
