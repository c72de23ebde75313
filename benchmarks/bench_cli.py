"""Wall time of simple ``spiffe-server`` CLI calls against a real server.

Run: ``.venv/bin/python benchmarks/bench_cli.py [--calls 20] [--check]``.

A real ``spiffe-server`` runs as a subprocess (SQLite); one entry is created. Each call is a
fresh ``python -m spiffe_server.cli`` process, timed from spawn to exit, ``--calls`` times per command:

- ``entry show --entry-id ID``: the target call (p50 <= 150 ms);
- ``entry count`` and ``agent list``;
- floor, same run: ``python -c pass``, the interpreter start-up that no CLI call can beat.

The calls are interleaved: each round runs the floor and every command once.

``--check`` exits 1 when the ``entry show`` p50 is over 150 ms.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import Result, format_table

from tests.support.server_proc import ServerProc

TARGET_P50_S = 0.150


def _once(name: str, argv: list[str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system of the child) of one call."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, check=False, timeout=60)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise SystemExit(f"{name} failed: {res.stderr.decode(errors='replace')}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _interleaved(cases: dict[str, list[str]], calls: int) -> dict[str, tuple[Result, Result]]:
    """``calls`` rounds; each round runs every case once, so a noisy moment hits them all alike."""
    wall: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(calls):
        for name, argv in cases.items():
            w, c = _once(name, argv)
            wall[name].append(w)
            cpu[name].append(c)
    return {name: (Result(name, tuple(wall[name])), Result(f"{name} (CPU)", tuple(cpu[name]))) for name in cases}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if entry show p50 > {TARGET_P50_S * 1000:.0f} ms")
    args = parser.parse_args()
    with ServerProc.start() as server:
        entry = server.cli_json("entry", "create", "--spiffe-id", "spiffe://example.org/bench",
                                "--parent-id", "spiffe://example.org/node", "--selector", "unix:uid:1")
        cli = [sys.executable, "-m", "spiffe_server.cli"]
        sock = ["--socket-path", str(server.socket_path)]
        runs = _interleaved({
            "python -c pass (floor)": [sys.executable, "-c", "pass"],
            "entry show --entry-id": [*cli, "entry", "show", "--entry-id", entry["id"], *sock],
            "entry count": [*cli, "entry", "count", *sock],
            "agent list": [*cli, "agent", "list", *sock],
        }, args.calls)
    (floor, floor_cpu), (show, show_cpu) = runs["python -c pass (floor)"], runs["entry show --entry-id"]
    others = [runs["entry count"], runs["agent list"]]
    print(f"wall time per call ({args.calls} interleaved rounds)")
    print(format_table([show, *(w for w, _ in others)], floor=floor))
    print("\nCPU time per call (the CLI process alone; what a busy box cannot inflate)")
    print(format_table([show_cpu, *(c for _, c in others)], floor=floor_cpu))
    verdict = "met" if show.median <= TARGET_P50_S else "NOT met"
    print(f"\nentry show --entry-id: p50 {show.median * 1000:.0f} ms, p99 {show.p99 * 1000:.0f} ms wall, "
          f"p50 {show_cpu.median * 1000:.0f} ms CPU (target p50 <= {TARGET_P50_S * 1000:.0f} ms wall: {verdict}; "
          f"floor p50 {floor.median * 1000:.0f} ms wall, {floor_cpu.median * 1000:.0f} ms CPU)")
    return 1 if args.check and show.median > TARGET_P50_S else 0


if __name__ == "__main__":
    raise SystemExit(main())
