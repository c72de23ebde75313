"""An AI agent calls a chat API through spiffe-broker: no API key anywhere in the agent's environment.

Next to a running agent with entries ``.../examples/broker`` (DNS name localhost),
``.../examples/ai-agent`` and ``.../examples/billing-client`` for this user (``bash
examples/run_all.sh ai_agent_via_broker`` sets that up)::

    python -m examples.ai_agent_via_broker

The operator's part: the provider key goes into a 0600 file that only the broker reads, and the
broker's config says which SPIFFE IDs may use it. The agent's part: a JWT-SVID for the broker's
audience as its bearer token. Exits 0 only if the AI agent gets its answer (the provider saw the
injected key), runs with no key in its environment, and another workload is refused (403).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from examples._common import check, start_server

TD = "spiffe://example.org/examples"
BROKER_ID = f"{TD}/broker"
PROVIDER_KEY = "sk-example-0123456789abcdef"  # stands in for the OPENAI_API_KEY the app used to hold


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only "is it up?": no data sent
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("spiffe-broker exited")
        try:
            with urllib.request.urlopen(f"{url}/healthz", context=context, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("spiffe-broker did not become healthy")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="broker-example-"))
    key_file = work / "provider.key"
    key_file.touch(mode=0o600)
    key_file.write_text(PROVIDER_KEY + "\n")
    provider, provider_port = start_server("examples.ai_agent_via_broker.chat_api", str(key_file))
    port = free_port()
    config = work / "broker.toml"
    config.write_text(f"""
bind_port = {port}
spiffe_id = "{BROKER_ID}"
data_dir = "{work / 'data'}"

[[upstream]]
name = "chat"
base_url = "http://127.0.0.1:{provider_port}/v1"
secret_file = "{key_file}"
inject = "bearer"
allow = ["{TD}/ai-agent"]
""")
    broker_bin = Path(sys.executable).parent / "spiffe-broker"
    broker = subprocess.Popen([str(broker_bin), "run", "--config", str(config)])  # SPIFFE_ENDPOINT_SOCKET is set
    results = []
    try:
        url = f"https://localhost:{port}"
        wait_healthy(url, broker)
        print(f"broker {BROKER_ID} serving {url}; the key is only in {key_file} (0600)")
        no_key_env = {k: v for k, v in os.environ.items() if "KEY" not in k.upper()}
        agent_module = "examples.ai_agent_via_broker.agent"
        agent = subprocess.run([sys.executable, "-m", agent_module, url, BROKER_ID, f"{TD}/ai-agent"],
                               env=no_key_env, capture_output=True, text=True, timeout=60, check=False)
        print(agent.stdout, agent.stderr, end="")
        results.append(check(agent.returncode == 0 and "You asked: what is SPIFFE?" in agent.stdout,
                             "the AI agent got its answer through the broker"))
        results.append(check(PROVIDER_KEY not in agent.stdout + agent.stderr, "the key never reached the agent"))
        other = subprocess.run([sys.executable, "-m", agent_module, url, BROKER_ID, f"{TD}/billing-client"],
                               env=no_key_env, capture_output=True, text=True, timeout=60, check=False)
        print(other.stdout, end="")
        results.append(check(other.returncode == 3 and "403" in other.stdout,
                             "a workload not on the upstream's allow list is refused (403)"))
    finally:
        broker.terminate()
        broker.wait(15)
        provider.terminate()
        provider.wait(15)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
