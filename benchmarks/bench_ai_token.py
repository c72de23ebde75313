"""``get_token()`` of the AI-SDK integrations vs a bare FetchJWTSVID, measured in the same run.

Run: ``.venv/bin/python benchmarks/bench_ai_token.py [--rounds 10] [--calls 100]``.

A real ``spiffe-server`` and ``spiffe-agent`` run as subprocesses; this process is the workload.
Cases, timed in alternating rounds so drifting machine load hits all alike:

* floor: ``WorkloadApiClient.fetch_jwt_svid(aud)`` on a warm channel (the agent's cache holds the token);
* warm: ``JwtSvidProvider.get_token()`` (``workload_identity(...)["provider"]["get_token"]``) once started;
* cold: a new provider per call (connect, JwtSource's first bundle, then the fetch), as the first
  exchange of a new SDK client pays it;
* new audience: floor and provider on an audience the agent has no token for yet (the agent signs
  one through the server): ``bare fetch, new audience`` is that case's floor.

Reports median and p99 per case and each case's ratio to its floor.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stats import Result, median, percentile

from spiffe_py.integrations import JwtSvidProvider
from spiffe_py.workloadapi import JwtSource, WorkloadApiClient
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

AUDIENCE = "https://api.openai.com/v1"


def _timed(fn: object, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=100, help="warm calls per case per round (cold: a tenth)")
    args = parser.parse_args()
    # One uid makes every call here: the agent's per-uid call rate limit (tested on its own) is lifted.
    config = Path(tempfile.mkdtemp(prefix="bench-ai-")) / "agent.toml"
    config.write_text("[uid_rate_limit]\nenabled = false\n")
    with ServerProc.start() as srv, AgentProc.start(srv, "bench", ("--config", str(config))) as agent:
        agent.wait_ready()
        srv.cli("entry", "create", "--spiffe-id", "spiffe://example.org/bench/ai", "--parent-id", agent.agent_id,
                "--selector", f"unix:uid:{os.geteuid()}", "--jwt-svid-ttl", "300")
        with WorkloadApiClient(agent.address, timeout=10) as client, \
                JwtSvidProvider(AUDIENCE, address=agent.address) as warm:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.fetch_jwt_svid(AUDIENCE)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            warm.get_token()
            shared = JwtSource.start(client, timeout=10)
            samples: dict[str, list[float]] = {k: [] for k in (
                "bare FetchJWTSVID (floor)", "get_token warm", "get_token cold (new provider)",
                "bare fetch, new audience (floor)", "get_token, new audience")}

            def cold() -> None:
                with JwtSvidProvider(AUDIENCE, address=agent.address) as provider:
                    provider.get_token()

            def bare_new() -> None:
                client.fetch_jwt_svid(f"https://bench-{uuid.uuid4().hex}.example")

            def provider_new() -> None:  # a started source shared, as workload_identity(source=...) does
                JwtSvidProvider(f"https://bench-{uuid.uuid4().hex}.example", source=shared).get_token()

            few = max(args.calls // 10, 3)
            for _ in range(args.rounds):
                samples["bare FetchJWTSVID (floor)"] += _timed(lambda: client.fetch_jwt_svid(AUDIENCE), args.calls)
                samples["get_token warm"] += _timed(warm.get_token, args.calls)
                samples["get_token cold (new provider)"] += _timed(cold, few)
                samples["bare fetch, new audience (floor)"] += _timed(bare_new, few)
                samples["get_token, new audience"] += _timed(provider_new, few)
            shared.close()
    results = [Result(name, tuple(s)) for name, s in samples.items()]
    floors = {"bare FetchJWTSVID (floor)": results[0], "bare fetch, new audience (floor)": results[3]}
    print(f"{'case':38} {'n':>5} {'median ms':>10} {'p99 ms':>9} {'x floor (median)':>17} {'x floor (p99)':>14}")
    for r in results:
        floor = floors["bare fetch, new audience (floor)"] if "new audience" in r.name else \
            floors["bare FetchJWTSVID (floor)"]
        print(f"{r.name:38} {len(r.samples):5} {median(r.samples) * 1e3:10.3f} {percentile(r.samples, 99) * 1e3:9.3f} "
              f"{r.median / floor.median:17.2f} {r.p99 / floor.p99:14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
