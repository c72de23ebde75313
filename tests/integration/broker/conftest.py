"""A real spiffe-server, spiffe-agent, spiffe-broker and provider stand-in, shared by the broker tests."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi import WorkloadApiClient
from tests.support.agent_proc import AgentProc
from tests.support.proc import spawn, terminate
from tests.support.server_proc import ServerProc, free_port

TD = "example.org"
BROKER_ID = f"spiffe://{TD}/broker"
UNLISTED_BROKER_ID = f"spiffe://{TD}/broker-unlisted"  # a broker the server's [audit] forwarders does not name
SERVER_CONFIG = f"""
trust_domain = "{TD}"

[audit]
forwarders = ["{BROKER_ID}"]
"""
UID = f"unix:uid:{os.geteuid()}"
OPENAI_KEY = "sk-proj-OPENAIKEY-f00dfeedcafe1234567890"
ANTHROPIC_KEY = "sk-ant-api03-ANTHROPICKEY-0123456789abcdef"
HERE = Path(__file__).parent
BROKER = [str(Path(sys.executable).parent / "spiffe-broker")]
# the callers' identities (one per test that revokes or quarantines, so tests do not disturb each other)
CALLERS = ("agent", "mtls", "revoked-jwt", "revoked-x509", "quarantined", "budget", "orchestrator", "sub-agent",
           "sub-sub-agent", "wrong-aud", "audited")
POLICY = """
[[rule]]
name = "model-allow-list"
when = 'request.kind == "proxy" && has(request.model) && !(request.model in ["gpt-4o-mini", "claude-haiku-4-5"])'
effect = "deny"
reason = "model not on the allow list"

[[rule]]
name = "max-tokens-cap"
when = 'request.kind == "proxy" && has(request.max_tokens) && request.max_tokens > 1024'
effect = "deny"
reason = "max_tokens above 1024"

[[rule]]
name = "exchange-ttl"
when = 'request.kind == "token_exchange"'
effect = "allow"
max_ttl = 120
"""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0, step: float = 0.02) -> float:
    """Poll until ``predicate`` holds; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class BrokerEnv:
    """The running processes and what a test needs to call the broker."""

    server: ServerProc
    agent: AgentProc
    root: Path
    port: int
    upstream_log: Path
    broker_log: Path
    audit_path: Path
    bundle_pem: str
    entries: dict[str, str] = field(default_factory=dict)  # caller name -> entry id
    broker: subprocess.Popen[bytes] | None = None
    metrics_port: int = 0
    upstream_port: int = 0

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    def spiffe_id(self, name: str) -> str:
        return f"spiffe://{TD}/ai/{name}"

    def jwt(self, name: str, audience: str = BROKER_ID) -> str:
        """A JWT-SVID of caller ``name`` from the agent."""
        with WorkloadApiClient(self.agent.address, timeout=30) as client:
            return client.fetch_jwt_svid(audience, SpiffeId.parse(self.spiffe_id(name))).token

    def verify_context(self) -> ssl.SSLContext:
        """Trusts the broker's SVID (the trust bundle) and checks the name localhost (the entry's DNS SAN)."""
        return ssl.create_default_context(cadata=self.bundle_pem)

    def mtls_context(self, name: str) -> tuple[ssl.SSLContext, int]:
        """A client context carrying caller ``name``'s X509-SVID; and the SVID's serial."""
        with WorkloadApiClient(self.agent.address, timeout=30) as client:
            svid = next(s for s in client.fetch_x509_context().svids if str(s.spiffe_id) == self.spiffe_id(name))
        ctx = self.verify_context()
        d = Path(tempfile.mkdtemp(dir=self.root))
        (d / "c.pem").write_bytes(svid.chain_pem())
        key = d / "k.pem"
        key.touch(mode=0o600)
        key.write_bytes(svid.key_pem())
        ctx.load_cert_chain(d / "c.pem", key)
        shutil.rmtree(d)
        return ctx, svid.cert_chain[0].serial_number

    def client(self, ctx: ssl.SSLContext | None = None) -> httpx.Client:
        return httpx.Client(verify=ctx or self.verify_context(), timeout=30)

    def log_text(self) -> str:
        return self.broker_log.read_text(errors="replace") if self.broker_log.exists() else ""

    def upstream_requests(self) -> list[dict[str, object]]:
        import json

        if not self.upstream_log.exists():
            return []
        return [json.loads(line) for line in self.upstream_log.read_text().splitlines() if line]


def _write_secret(path: Path, value: str) -> None:
    path.touch(mode=0o600)
    path.write_text(value + "\n")


def broker_config(env: BrokerEnv, *, port: int, spiffe_id: str = BROKER_ID, data_dir: str = "data",
                  metrics_port: int = 0) -> str:
    """A broker's config: its listener, SVID and data dir; the upstreams; the trail forwarded to the server."""
    base = f"http://127.0.0.1:{env.upstream_port}"
    return f"""
bind_address = "127.0.0.1"
bind_port = {port}
policy_file = "{env.root / 'policy.toml'}"
workload_api_socket = "{env.agent.address}"
spiffe_id = "{spiffe_id}"
data_dir = "{env.root / data_dir}"
upstream_read_timeout = "10s"
max_request_bytes = 65536
metrics_port = {metrics_port}
server_address = "127.0.0.1:{env.server.port}"

[token_exchange]
max_ttl = "5m"
max_act_depth = 2
audiences = ["spiffe://{TD}/tools/search"]

[[upstream]]
name = "openai"
base_url = "{base}/v1"
secret_file = "{env.root / 'openai.key'}"
inject = "bearer"
allow = ["spiffe://{TD}/ai/*"]

[[upstream]]
name = "anthropic"
base_url = "{base}"
secret_file = "{env.root / 'anthropic.key'}"
inject = "x-api-key"
allow = ["spiffe://{TD}/ai/*"]

[[upstream]]
name = "budgeted"
base_url = "{base}/v1"
secret_file = "{env.root / 'openai.key'}"
inject = "bearer"
allow = ["spiffe://{TD}/ai/budget"]
tokens_per_day = 25

[[upstream]]
name = "down"
base_url = "http://127.0.0.1:{free_port()}/v1"
secret_file = "{env.root / 'openai.key'}"
allow = ["spiffe://{TD}/ai/*"]
"""


@pytest.fixture(scope="package")
def broker_env() -> Iterator[BrokerEnv]:
    server = ServerProc.start(trust_domain=TD, config_text=SERVER_CONFIG)
    agent = AgentProc.start(server, "a1")
    root = Path(tempfile.mkdtemp(prefix="broker-", dir="/tmp"))
    env = BrokerEnv(server=server, agent=agent, root=root, port=free_port(), upstream_log=root / "upstream.jsonl",
                    broker_log=root / "broker.log", audit_path=root / "data" / "audit.jsonl",
                    bundle_pem=server.cli("bundle", "show").stdout, metrics_port=free_port())
    upstream: subprocess.Popen[bytes] | None = None
    try:
        env.entries = {name: f"broker-test-{name}" for name in CALLERS}
        brokers = [{"id": "broker-test-broker", "spiffe_id": BROKER_ID, "dns_names": ["localhost"]},
                   {"id": "broker-test-unlisted", "spiffe_id": UNLISTED_BROKER_ID, "dns_names": ["localhost"]}]
        create_entries(env, brokers + [{"id": env.entries[n], "spiffe_id": env.spiffe_id(n)} for n in CALLERS])
        _write_secret(root / "openai.key", OPENAI_KEY)
        _write_secret(root / "anthropic.key", ANTHROPIC_KEY)
        (root / "policy.toml").write_text(POLICY)
        env.upstream_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, str(HERE / "provider_standin.py"), str(env.upstream_port), str(root / "openai.key"),
             str(root / "anthropic.key"), str(env.upstream_log)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        (root / "broker.toml").write_text(broker_config(env, port=env.port, metrics_port=env.metrics_port))
        agent.wait_ready()
        wait_until(lambda: _has(env, BROKER_ID), "the broker's SVID")
        assert upstream.stdout is not None and b"ready" in upstream.stdout.readline()
        env.broker = start_broker(env, root / "broker.toml", env.broker_log, env.port)
        yield env
    finally:
        print(env.log_text()[-6000:])
        terminate(env.broker)
        terminate(upstream)
        agent.close()
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def start_broker(env: BrokerEnv, config: Path, log: Path, port: int) -> subprocess.Popen[bytes]:
    """``spiffe-broker run`` with ``config``, once it serves on ``port``."""
    # the broker's environment holds no provider key either: it reads the files
    clean_env = {k: v for k, v in os.environ.items() if "KEY" not in k.upper()}
    proc = subprocess.Popen([*BROKER, "run", "--config", str(config), "--log-level", "debug"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=clean_env)
    try:
        wait_until(lambda: _healthy(env, proc, port, log), "the broker to serve", timeout=60)
    except BaseException:
        terminate(proc)
        raise
    return proc


def create_entries(env: BrokerEnv, entries: list[dict[str, object]]) -> None:
    """One ``entry create --data`` batch, each entry for this uid under the agent."""
    import json

    data = {"entries": [{"parent_id": env.agent.agent_id, "selectors": [UID], **e} for e in entries]}
    env.server.cli("entry", "create", "--data", "-", stdin=json.dumps(data).encode())


def _has(env: BrokerEnv, spiffe_id: str) -> bool:
    with WorkloadApiClient(env.agent.address, timeout=30) as client:
        return spiffe_id in {str(s.spiffe_id) for s in client.fetch_x509_context().svids}


def _healthy(env: BrokerEnv, proc: subprocess.Popen[bytes], port: int, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"broker exited:\n{log.read_text(errors='replace')}")
    try:
        with env.client() as c:
            return c.get(f"https://localhost:{port}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


__all__ = ["ANTHROPIC_KEY", "BROKER_ID", "OPENAI_KEY", "TD", "UNLISTED_BROKER_ID", "BrokerEnv", "broker_config",
           "spawn", "start_broker", "wait_until"]
