"""The credential broker against a bare reverse proxy on the same HTTP stack, and revocation-to-refusal time.

Run: ``.venv/bin/python benchmarks/bench_broker.py [--rounds 20] [--per-round 50] [--trials 5]``.

Real processes: ``spiffe-server``, ``spiffe-agent``, ``spiffe-broker``, the provider stand-in of
the broker tests (OpenAI wire format) and the floor, a bare aiohttp reverse proxy (this file with
``--bare-proxy``): TLS with the same certificate, keep-alive HTTP/1.1 to the upstream, the same
streaming copy loop, but no authentication, revocation check, policy, budget, audit or metrics. The broker runs a
two-rule CEL policy (model allow-list, max_tokens cap) and writes its audit trail.
The client (httpx, one kept-alive connection per target) sends the same non-streamed chat
completion through each, interleaved round by round, so machine noise hits both alike. Reported:
median and p99 per request, the ratio broker/floor (target: median <= 1.3x), throughput of each
and their ratio. Then ``--trials`` times: a caller's JWT-SVID is revoked with the CLI and the
broker polled every 5 ms until it refuses (401): the time from spawning the CLI and from its exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _stats import Result, format_table, median, percentile

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
TD = "example.org"
BROKER_ID = f"spiffe://{TD}/broker"
CALLER = f"spiffe://{TD}/ai/bench"
# the rules a deployment would have: a model allow-list and a max_tokens cap (both evaluated, neither denies)
POLICY = """
[[rule]]
name = "model-allow-list"
when = 'request.kind == "proxy" && has(request.model) && !(request.model in ["gpt-4o-mini", "claude-haiku-4-5"])'
effect = "deny"
reason = "model not on the allow list"

[[rule]]
name = "max-tokens-cap"
when = 'has(request.max_tokens) && request.max_tokens > 1024'
effect = "deny"
reason = "max_tokens above 1024"
"""


def bare_proxy(port: int, upstream: str, cert: str, key: str) -> None:
    """The floor: aiohttp in, aiohttp out, nothing else."""
    import aiohttp
    from aiohttp import web

    hop = {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"}

    async def handle(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop]
        async with session.request(request.method, f"{upstream}/{request.match_info['tail']}", headers=headers,
                                   data=body) as up:
            response = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in hop:
                    response.headers.add(k, v)
            if up.content_length is not None:
                response.content_length = up.content_length
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_route("*", "/{name}/{tail:.*}", handle)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    web.run_app(app, host="127.0.0.1", port=port, ssl_context=ctx, print=lambda *_: print("ready", flush=True),
                access_log=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--bare-proxy", nargs=4, metavar=("PORT", "UPSTREAM", "CERT", "KEY"))
    args = parser.parse_args()
    if args.bare_proxy:
        bare_proxy(int(args.bare_proxy[0]), *args.bare_proxy[1:])
        return 0

    import httpx
    import jwt as pyjwt

    from spiffe_py.spiffeid import SpiffeId
    from spiffe_py.workloadapi import WorkloadApiClient
    from tests.integration.broker.conftest import wait_until
    from tests.support.agent_proc import AgentProc
    from tests.support.proc import terminate
    from tests.support.server_proc import ServerProc, free_port

    root = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    procs: list[subprocess.Popen[bytes]] = []
    uid = f"unix:uid:{os.geteuid()}"
    with ServerProc.start(trust_domain=TD) as server, AgentProc.start(server, "a1") as agent:
        try:
            data = {"entries": [{"spiffe_id": BROKER_ID, "parent_id": agent.agent_id, "selectors": [uid],
                                 "dns_names": ["localhost"]},
                                {"spiffe_id": CALLER, "parent_id": agent.agent_id, "selectors": [uid]}]}
            server.cli("entry", "create", "--data", "-", stdin=json.dumps(data).encode())
            agent.wait_ready()
            key_file = root / "openai.key"
            key_file.touch(mode=0o600)
            key_file.write_text("sk-bench-key\n")
            up_port, broker_port, floor_port = free_port(), free_port(), free_port()
            standin = Path(__file__).resolve().parents[1] / "tests/integration/broker/provider_standin.py"
            upstream = subprocess.Popen([sys.executable, str(standin), str(up_port), str(key_file), str(key_file),
                                         str(root / "up.log")], stdout=subprocess.PIPE)
            procs.append(upstream)
            assert upstream.stdout is not None and b"ready" in upstream.stdout.readline()

            def svids() -> dict[str, object]:
                with WorkloadApiClient(agent.address, timeout=30) as client:
                    return {str(s.spiffe_id): s for s in client.fetch_x509_context().svids}

            wait_until(lambda: BROKER_ID in svids() and CALLER in svids(), "the SVIDs")
            svid = svids()[BROKER_ID]
            (root / "cert.pem").write_bytes(svid.chain_pem())  # type: ignore[attr-defined]
            (root / "key.pem").touch(mode=0o600)
            (root / "key.pem").write_bytes(svid.key_pem())  # type: ignore[attr-defined]
            (root / "policy.toml").write_text(POLICY)
            (root / "broker.toml").write_text(f"""
bind_port = {broker_port}
policy_file = "{root / 'policy.toml'}"
workload_api_socket = "{agent.address}"
spiffe_id = "{BROKER_ID}"
data_dir = "{root / 'data'}"
[[upstream]]
name = "openai"
base_url = "http://127.0.0.1:{up_port}/v1"
secret_file = "{key_file}"
allow = ["spiffe://{TD}/ai/*"]
""")
            broker = subprocess.Popen([str(Path(sys.executable).parent / "spiffe-broker"), "run", "--config",
                                       str(root / "broker.toml"), "--log-level", "warning"])
            procs.append(broker)
            floor = subprocess.Popen([sys.executable, __file__, "--bare-proxy", str(floor_port),
                                      f"http://127.0.0.1:{up_port}/v1", str(root / "cert.pem"), str(root / "key.pem")],
                                     stdout=subprocess.PIPE)
            procs.append(floor)
            assert floor.stdout is not None and b"ready" in floor.stdout.readline()
            bundle = server.cli("bundle", "show").stdout
            verify = ssl.create_default_context(cadata=bundle)

            def token() -> str:
                with WorkloadApiClient(agent.address, timeout=30) as client:
                    return client.fetch_jwt_svid(BROKER_ID, SpiffeId.parse(CALLER)).token

            def healthy() -> bool:
                try:
                    with httpx.Client(verify=verify) as c:
                        return c.get(f"https://localhost:{broker_port}/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, "the broker", timeout=60)
            jwt = token()
            targets = {
                "broker (JWT-SVID, policy, audit)": (f"https://localhost:{broker_port}/openai/chat/completions",
                                                     {"Authorization": f"Bearer {jwt}"}),
                "floor: bare aiohttp proxy": (f"https://localhost:{floor_port}/openai/chat/completions",
                                              {"Authorization": "Bearer sk-bench-key"}),
            }
            clients = {name: httpx.Client(verify=verify, timeout=30) for name in targets}
            samples: dict[str, list[float]] = {name: [] for name in targets}
            busy: dict[str, float] = dict.fromkeys(targets, 0.0)
            for name, (url, headers) in targets.items():  # warm up: connections, memos
                for _ in range(20):
                    assert clients[name].post(url, headers=headers, json=BODY).status_code == 200
            order = list(targets)
            for r in range(args.rounds):
                for name in order if r % 2 == 0 else reversed(order):
                    url, headers = targets[name]
                    client = clients[name]
                    start_round = time.perf_counter()
                    for _ in range(args.per_round):
                        t0 = time.perf_counter()
                        response = client.post(url, headers=headers, json=BODY)
                        samples[name].append(time.perf_counter() - t0)
                        assert response.status_code == 200, response.text
                    busy[name] += time.perf_counter() - start_round
            results = {name: Result(name, tuple(s)) for name, s in samples.items()}
            floor_result = results[order[1]]
            broker_result = results[order[0]]
            print(format_table([broker_result], floor=floor_result))
            n = args.rounds * args.per_round
            tput = {name: n / busy[name] for name in targets}
            print(f"throughput (sequential, one connection): broker {tput[order[0]]:.0f}/s, "
                  f"floor {tput[order[1]]:.0f}/s, ratio {tput[order[0]] / tput[order[1]]:.2f}")
            ratio = broker_result.median / floor_result.median
            print(f"broker median = {ratio:.2f}x floor (target <= 1.3x): {'MET' if ratio <= 1.3 else 'NOT MET'}")

            from_spawn: list[float] = []
            from_exit: list[float] = []
            for _ in range(args.trials):
                jwt = token()
                headers = {"Authorization": f"Bearer {jwt}"}
                with httpx.Client(verify=verify, timeout=30) as client:
                    url = targets[order[0]][0]
                    assert client.post(url, headers=headers, json=BODY).status_code == 200
                    jti = pyjwt.decode(jwt, options={"verify_signature": False})["jti"]
                    spawned = time.monotonic()
                    server.cli("revoke", "svid", "--jti", jti, "--reason", "bench")
                    exited = time.monotonic()
                    while client.post(url, headers=headers, json=BODY).status_code != 401:
                        time.sleep(0.005)
                    refused = time.monotonic()
                from_spawn.append(refused - spawned)
                from_exit.append(refused - exited)
            print(f"revocation -> refusal over {args.trials} trials: from spawning the CLI median "
                  f"{median(from_spawn) * 1000:.0f} ms, p99 {percentile(from_spawn, 99) * 1000:.0f} ms; "
                  f"from the CLI's exit median {median(from_exit) * 1000:.1f} ms, "
                  f"p99 {percentile(from_exit, 99) * 1000:.1f} ms")
            for c in clients.values():
                c.close()
        finally:
            for p in procs:
                terminate(p)
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
