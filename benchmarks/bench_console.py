"""Server time of the web console's pages with 10,000 entries and 100,000 audit records.

Run: ``.venv/bin/python benchmarks/bench_console.py [--rounds 30] [--entries 10000] [--audit 100000] [--check]``.

The console runs in this process on a real SQLite datastore (the server's own ServerContext,
AdminService and Console), on a loopback port; an aiohttp client logged in with a session
cookie fetches every page. The server time of a request is what the console's outermost
middleware measured from receiving it to the response (``Console.render_seconds``), so
the client's own work is not counted. Rounds are interleaved (every page once per round).

- pages: ``/`` ``/entries`` (unfiltered; by a label 200 entries carry; by a label none carries,
  which the query checks on every entry) ``/agents`` ``/revocations`` ``/audit`` ``/policy`` ``/approvals``,
  and the JSON behind the two charts (``/overview/series``: per-minute counts of the last hour;
  ``/audit/series``: the rules of the newest 1,000 denials);
- floor, same run: ``/favicon.ico`` through the same middlewares (an empty 204).
- once: ``/audit/verify`` (VerifyAudit re-hashes the whole chain; the audit page loads it after
  rendering, with htmx, so it is not part of the page's render time).

The audit records are sealed by the server's own audit chain; a tenth are denials by the
payments approval rule (so the approvals inbox has work), all within the last 50 minutes (so
the charts and the audit page's default 10-minute window hold ~20,000 of them). ``--check``
exits 1 when a page's p50 is 300 ms or more.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import Result, format_table
from aiohttp import ClientSession

from spiffe_py.audit import build_event
from spiffe_py.clock import SystemClock
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.api.admin_service import AdminService
from spiffe_server.api.context import ServerContext
from spiffe_server.ca.keys import MemoryKeyManager
from spiffe_server.ca.manager import CaConfig, CaManager, MemoryJournalStore
from spiffe_server.config import ConsoleConfig, ServerConfig
from spiffe_server.console.web import Console
from spiffe_server.datastore import RegistrationEntry, open_datastore
from tests.support.policy_rules import PAYMENTS_REASON, PAYMENTS_RULE

TARGET_P50_S = 0.300
PAGES = ("/", "/entries", "/entries?label=team%3Dt7", "/entries?label=absent", "/agents", "/revocations", "/audit",
         "/policy", "/approvals", "/overview/series", "/audit/series")
AGENT = "spiffe://example.org/spire/agent/join_token/bench"
TD = TrustDomain.parse("example.org")


def build(tmp: Path, entries: int) -> tuple[ServerContext, AdminService, list[str]]:
    clock = SystemClock()
    policy = tmp / "policy.toml"
    policy.write_text(PAYMENTS_RULE)
    ca = CaManager(CaConfig(trust_domain=TD), keys=MemoryKeyManager(), journal=MemoryJournalStore(), clock=clock)
    ctx = ServerContext(config=ServerConfig(trust_domain=TD, data_dir=tmp, policy_file=policy),
                        store=open_datastore(tmp / "db"), ca=ca, clock=clock)
    now = clock.now()
    ids = []
    for start in range(0, entries, 1000):
        batch = [RegistrationEntry(spiffe_id=f"spiffe://example.org/w/{i}", parent_id=AGENT,
                                   selectors=(Selector("unix", f"uid:{i}"),), created_at=now,
                                   labels={"team": f"t{i % 50}"})
                 for i in range(start, min(entries, start + 1000))]
        ids += [e.id for e in ctx.store.create_entries(batch) if isinstance(e, RegistrationEntry)]
    return ctx, AdminService(ctx), ids


async def fill_audit(ctx: ServerContext, ids: list[str], count: int) -> None:
    now = ctx.clock.now()
    for start in range(0, count, 1000):
        events = []
        for n in range(start, min(count, start + 1000)):
            at = now - timedelta(seconds=3000 * (count - n) / count)  # spread over the last 50 minutes
            deny = n % 10 == 0
            entry_id = ids[n % len(ids)] if ids else "none"
            events.append(build_event(
                now=at, actor="spiffe://example.org/spire/agent/join_token/bench",
                spiffe_id=f"spiffe://example.org/w/{n % 10_000}", selectors=(), decision="deny" if deny else "allow",
                reason=PAYMENTS_REASON if deny else "no deny rule matched", method="FetchJWTSVID",
                details={"rule": "payments-needs-approval" if deny else None, "entry_id": entry_id,
                         "audiences": ["payments"]}))
        await ctx.guard.record(events)


async def run(rounds: int, entries: int, audit: int) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        started = time.perf_counter()
        ctx, service, ids = build(Path(tmp), entries)
        await fill_audit(ctx, ids, audit)
        print(f"setup: {entries} entries, {ctx.store.list_audit_recent(limit=1)[0].seq} audit records "
              f"in {time.perf_counter() - started:.1f}s")
        await ctx.entries.catch_up()
        console = Console(ctx, service, ConsoleConfig(bind_port=0))
        await console.start()
        url, _ = console.logins.issue("bench", readonly=False)
        session_id, _ = console.logins.redeem(url.split("token=")[1])
        base = f"http://127.0.0.1:{console.port}"
        samples: dict[str, list[float]] = {p: [] for p in (*PAGES, "/favicon.ico")}
        try:
            async with ClientSession(headers={"Cookie": f"spiffe_console={session_id}"}) as http:
                async def get(path: str) -> float:
                    async with http.get(base + path) as response:
                        body = await response.read()
                        if response.status not in (200, 204):
                            raise SystemExit(f"{path}: HTTP {response.status}: {body[:200]!r}")
                    last_path, seconds = console.render_seconds[-1]
                    assert last_path == path.split("?", maxsplit=1)[0]
                    return seconds

                first_series = await get("/overview/series")  # counts every record of the last hour once
                for path in samples:  # warm-up
                    await get(path)
                for _ in range(rounds):
                    for path, values in samples.items():
                        values.append(await get(path))
                verify_started = time.perf_counter()
                async with http.get(base + "/audit/verify") as response:
                    text = await response.text()
                verify_s = time.perf_counter() - verify_started
        finally:
            await console.close()
            ctx.store.close()
    floor = Result("floor: /favicon.ico (middlewares only)", tuple(samples.pop("/favicon.ico")))
    results = [Result(path, tuple(values)) for path, values in samples.items()]
    print(format_table(results, floor=floor))
    print(f"/overview/series, first request (reads the whole last hour once): {first_series * 1000:.0f} ms")
    print(f"/audit/verify (whole chain, once, loaded after the audit page): {verify_s * 1000:.0f} ms, "
          f"{'verified' if 'Chain verified' in text else 'NOT verified'}")
    slow = [r.name for r in results if r.median >= TARGET_P50_S]
    print(f"target p50 < {TARGET_P50_S * 1000:.0f} ms: {'met' if not slow else 'missed by ' + ', '.join(slow)}")
    return 1 if slow else 0


def main() -> int:
    logging.getLogger("spiffe_server").setLevel(logging.ERROR)  # not the console's login line
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--audit", type=int, default=100_000)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    code = asyncio.run(run(args.rounds, args.entries, args.audit))
    return code if args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
