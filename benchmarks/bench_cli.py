"""Wall time of simple ``spiffe-server`` CLI calls against a real server.

Run: ``.venv/bin/python benchmarks/bench_cli.py [--calls 20] [--check]``.

A real ``spiffe-server`` runs as a subprocess (SQLite); one entry is created. Each call is a
fresh ``python -m spiffe_server.cli`` process, timed from spawn to exit, ``--calls`` times per command:

- ``entry show --entry-id ID``: the target call (p50 <= 150 ms);
- ``entry count`` and ``agent list``;
- floor, same run: ``python -c pass``, the interpreter start-up that no CLI call can beat.

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


def _time(name: str, argv: list[str], calls: int) -> tuple[Result, Result]:
    """Wall time and CPU time (user + system of the child) per call."""
    wall, cpu = [], []
    for _ in range(calls):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        res = subprocess.run(argv, capture_output=True, check=False, timeout=60)
        wall.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if res.returncode != 0:
            raise SystemExit(f"{name} failed: {res.stderr.decode(errors='replace')}")
    return Result(name, tuple(wall)), Result(f"{name} (CPU)", tuple(cpu))


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
        floor, floor_cpu = _time("python -c pass (floor)", [sys.executable, "-c", "pass"], args.calls)
        show, show_cpu = _time("entry show --entry-id", [*cli, "entry", "show", "--entry-id", entry["id"], *sock],
                               args.calls)
        count, count_cpu = _time("entry count", [*cli, "entry", "count", *sock], args.calls)
        agents, agents_cpu = _time("agent list", [*cli, "agent", "list", *sock], args.calls)
    print("wall time per call")
    print(format_table([show, count, agents], floor=floor))
    print("\nCPU time per call (the CLI process alone; what a busy box cannot inflate)")
    print(format_table([show_cpu, count_cpu, agents_cpu], floor=floor_cpu))
    verdict = "met" if show.median <= TARGET_P50_S else "NOT met"
    print(f"\nentry show --entry-id: p50 {show.median * 1000:.0f} ms, p99 {show.p99 * 1000:.0f} ms wall, "
          f"p50 {show_cpu.median * 1000:.0f} ms CPU (target p50 <= {TARGET_P50_S * 1000:.0f} ms wall: {verdict}; "
          f"floor p50 {floor.median * 1000:.0f} ms)")
    return 1 if args.check and show.median > TARGET_P50_S else 0


if __name__ == "__main__":
    raise SystemExit(main())
