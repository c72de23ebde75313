"""Opening the central audit chain at server start, with 1,000,000 rows, on SQLite and PostgreSQL.

Run: ``.venv/bin/python benchmarks/bench_audit_restart.py [--rows 1000000] [--rounds 5] [--no-postgres]``.

What a restart does with the chain: open the datastore and construct ``CentralAudit`` (it reads
the newest row and the agent-head bookkeeping, nothing else). The floor is the same on an empty
chain, measured in the same run; rounds alternate empty and full stores. Target: under 1 s at
1M rows (issue: "restart at 1M audit rows takes under 1 s").

The rows are written with one SQL statement each (linked hash columns, not sealed JSON: a
restart never parses them). ``tests/integration/server/test_audit_restart_scale.py`` does the
same with a real server process.
"""

from __future__ import annotations

import argparse
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from _stats import median, percentile

from spiffe_py.clock import SystemClock
from spiffe_server.audit import CentralAudit
from spiffe_server.datastore import open_datastore
from tests.support.postgres import postgres_url

TARGET_S = 1.0
_FILL = """
    INSERT INTO audit (seq, time, record, prev_hash, hash, spiffe_id, decision)
    SELECT x, 1700000000000000 + x, '{{"seq":' || x || '}}',
           CASE WHEN x = 1 THEN '' ELSE {hex_prev} END, {hex}, 'spiffe://example.org/w', 'allow'
    FROM {series}"""


def open_chain(url: str) -> float:
    """Seconds to open the store and the audit chain (what a server start does with them)."""
    t0 = time.perf_counter()
    store = open_datastore(url)
    try:
        CentralAudit(store, clock=SystemClock())
        return time.perf_counter() - t0
    finally:
        store.close()


def sqlite_stores(rows: int, root: Path) -> tuple[str, str]:
    empty, full = str(root / "empty.sqlite3"), str(root / "full.sqlite3")
    for url in (empty, full):
        open_datastore(url).close()
    fill = _FILL.format(hex_prev="printf('%064x', x - 1)", hex="printf('%064x', x)",
                        series=f"(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})"
                               " SELECT x FROM c)")
    with sqlite3.connect(full) as conn:
        conn.execute(fill)
        conn.execute("UPDATE counters SET value = ? WHERE name = 'audit'", (rows,))
    conn.close()
    return empty, full


def postgres_stores(rows: int) -> tuple[str, str, Callable[[], None]]:
    base = postgres_url()
    schemas = [f"bench_audit_{secrets.token_hex(4)}" for _ in range(2)]
    with psycopg.connect(base, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"create schema {schema}")  # type: ignore[arg-type]
    empty, full = (f"{base}?options=-csearch_path%3D{s}" for s in schemas)
    for url in (empty, full):
        open_datastore(url).close()
    fill = _FILL.format(hex_prev="lpad(to_hex(x - 1), 64, '0')", hex="lpad(to_hex(x), 64, '0')",
                        series=f"generate_series(1, {rows}) AS x")
    with psycopg.connect(full, autocommit=True) as conn:
        conn.execute(fill)  # type: ignore[arg-type]
        conn.execute("UPDATE counters SET value = %s WHERE name = 'audit'", (rows,))
        conn.execute("VACUUM ANALYZE audit")

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"drop schema {schema} cascade")  # type: ignore[arg-type]
    return empty, full, drop


def measure(name: str, empty: str, full: str, rounds: int, rows: int) -> bool:
    floor, loaded = [], []
    for _ in range(rounds):  # interleaved, so load on the box hits both alike
        floor.append(open_chain(empty))
        loaded.append(open_chain(full))
    ok = percentile(loaded, 99) < TARGET_S
    print(f"{name:>10}  empty chain: median {median(floor) * 1e3:7.1f} ms  p99 {percentile(floor, 99) * 1e3:7.1f} ms"
          f"  | {rows} rows: median {median(loaded) * 1e3:7.1f} ms  p99 {percentile(loaded, 99) * 1e3:7.1f} ms"
          f"  | ratio {median(loaded) / median(floor):5.2f}  | target < {TARGET_S:.0f} s: {'PASS' if ok else 'MISS'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as root:
        t0 = time.perf_counter()
        empty, full = sqlite_stores(args.rows, Path(root))
        print(f"sqlite: {args.rows} rows written in {time.perf_counter() - t0:.1f} s")
        ok &= measure("SQLite", empty, full, args.rounds, args.rows)
    if not args.no_postgres:
        t0 = time.perf_counter()
        empty, full, drop = postgres_stores(args.rows)
        print(f"postgresql: {args.rows} rows written in {time.perf_counter() - t0:.1f} s")
        try:
            ok &= measure("PostgreSQL", empty, full, args.rounds, args.rows)
        finally:
            drop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
