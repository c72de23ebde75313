"""From ``OPENAI_API_KEY=...`` to ``workload_identity=...``: the unmodified OpenAI SDK with no key.

Self-contained (it starts its own spiffe-server with ``[oidc]``, an agent and the stand-ins)::

    python -m examples.openai_without_a_key [--seconds 20]

1. A spiffe-server publishes OIDC discovery and its JWT keys over HTTPS at the issuer
   ``https://localhost:<port>`` (a throwaway web CA stands in for a public certificate).
2. "OpenAI" (the stand-in in ``standins.py``) has that issuer registered as identity provider
   ``idp_spiffe_example``, bound to service account ``sa_billing`` for the SPIFFE ID below.
3. The app (``app.py``) is ``OpenAI(workload_identity=workload_identity("idp_...", "sa_..."))``: the
   SDK exchanges the workload's JWT-SVID for an access token and calls chat completions. JWT-SVIDs
   live 10 s and access tokens 8 s, so the SDK re-exchanges with fresh JWT-SVIDs during the run.

Exits 0 only if every call succeeded, every exchange carried a valid JWT-SVID for our SPIFFE ID,
and at least two different JWT-SVIDs were exchanged.
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

from examples._common import check
from examples.oidc_token_exchange.__main__ import free_port
from examples.oidc_token_exchange.sts import Registration
from examples.openai_without_a_key.standins import ANTHROPIC_HOSTS, OPENAI_HOSTS, Federation, StandIns, sdk_env, web_pki

TD = "example.org"
SPIFFE_ID = f"spiffe://{TD}/examples/openai-app"
NODE_ID = f"spiffe://{TD}/node/openai-example"
BIN = Path(sys.executable).parent


def _run(*argv: str) -> str:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], check=True, capture_output=True, text=True,
                          timeout=60).stdout


def _wait(what: str, proc: subprocess.Popen[bytes], *probe: str) -> None:
    deadline = time.monotonic() + 60
    while subprocess.run([str(BIN / probe[0]), *probe[1:]], capture_output=True, check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.3)


def main() -> int:
    parser = argparse.ArgumentParser(description="the OpenAI SDK authenticated by a JWT-SVID, no API key")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the app keeps calling (default 20)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="openai-example-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    standins = None
    try:
        oidc_root, oidc_cert, oidc_key = web_pki(tmp, ["localhost"])
        oidc_port, agent_port = free_port(), free_port()
        issuer = f"https://localhost:{oidc_port}"
        (tmp / "server.toml").write_text(f'[oidc]\nbind_port = {oidc_port}\nissuer = "{issuer}"\n'
                                         f'cert_file = "{oidc_cert}"\nkey_file = "{oidc_key}"\n')
        admin = str(tmp / "server" / "api.sock")
        procs.append(subprocess.Popen([str(BIN / "spiffe-server"), "run", "--trust-domain", TD, "--data-dir",
                                       str(tmp / "server"), "--bind-port", str(agent_port), "--config",
                                       str(tmp / "server.toml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait("spiffe-server", procs[0], "spiffe-server", "healthcheck", "--socket-path", admin)
        token = json.loads(_run("spiffe-server", "token", "generate", "--spiffe-id", NODE_ID, "--output", "json",
                                "--socket-path", admin))["value"]
        (tmp / "bundle.pem").write_text(_run("spiffe-server", "bundle", "show", "--socket-path", admin))
        (tmp / "public").mkdir(mode=0o700)
        socket_path = tmp / "public" / "api.sock"
        procs.append(subprocess.Popen([str(BIN / "spiffe-agent"), "run", "--trust-domain", TD, "--server-port",
                                       str(agent_port), "--data-dir", str(tmp / "agent"), "--socket-path",
                                       str(socket_path), "--join-token", token,
                                       "--trust-bundle", str(tmp / "bundle.pem")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait("spiffe-agent", procs[1], "spiffe-agent", "healthcheck", "--socket-path", str(socket_path))
        _run("spiffe-server", "entry", "create", "--parent-id", NODE_ID, "--spiffe-id", SPIFFE_ID, "--selector",
             f"unix:uid:{os.geteuid()}", "--jwt-svid-ttl", "10", "--socket-path", admin)
        print(f"spiffe-server (OIDC issuer {issuer}) and agent up; {SPIFFE_ID} registered for this user")

        (tmp / "web").mkdir()
        web_root, web_cert, web_key = web_pki(tmp / "web", [*OPENAI_HOSTS, *ANTHROPIC_HOSTS])
        trust = ssl.create_default_context(cafile=str(oidc_root))
        registration = Registration(issuer, "https://api.openai.com/v1", trust)
        standins = StandIns(Federation(registration, Registration(issuer, "https://api.anthropic.com", trust),
                                       subject=SPIFFE_ID), web_cert, web_key)
        env = {**sdk_env(standins, web_root), "SPIFFE_ENDPOINT_SOCKET": f"unix://{socket_path}"}
        deadline = time.monotonic() + 30
        while True:  # the entry reaches the agent within a sync or two
            app = subprocess.run([sys.executable, "-m", "examples.openai_without_a_key.app", "--seconds",
                                  str(args.seconds)], check=False, env=env, capture_output=True, text=True,
                                 timeout=args.seconds + 90)
            summary = json.loads(app.stdout.strip().splitlines()[-1]) if app.stdout.strip() else {}
            if summary.get("ok") or time.monotonic() > deadline:
                break
            standins.ledger.exchange_refusals.clear()
            time.sleep(1)
        ledger = standins.ledger.snapshot()
        exchanged = {e["jti"] for e in ledger["exchanges"]}
        results = [
            check(app.returncode == 0 and summary.get("failed") == 0,
                  f"the app made {summary.get('ok')} chat completions with no API key, {summary.get('failed')} failed"),
            check(len(exchanged) >= 2 and all(e["sub"] == SPIFFE_ID for e in ledger["exchanges"]),
                  f"the SDK exchanged {len(exchanged)} different JWT-SVIDs for {SPIFFE_ID}"),
            check(ledger["exchange_refusals"] == [] and ledger["api_refusals"] == [], "no refusal at the stand-ins"),
        ]
        if not results[0]:
            print(app.stderr[-2000:])
        return 0 if all(results) else 1
    finally:
        if standins is not None:
            standins.close()
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(15)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
