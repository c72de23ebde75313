"""Real server + agent subprocesses for the agent integration tests.

Not ServerProc/AgentProc: entries precede the agent, tokenless/--insecure-bootstrap agents, raw Popens used.
Processes are started and stopped with the shared tests/support/proc.py.
The Workload API socket lives under a 0755 temp directory so a uid-65534 client can reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpclib.client import Channel, Stream

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.nodeattest.join_token import join_token_agent_id
from tests.support.proc import spawn, terminate
from tests.support.server_proc import free_port

VENV_BIN = Path(__file__).resolve().parents[3] / ".venv" / "bin"
TD = "example.org"
HEADER = {"workload.spiffe.io": "true"}


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.asynccontextmanager
async def x509_stream(
    socket_path: Path,
) -> AsyncIterator[Stream[workload_pb2.X509SVIDRequest, workload_pb2.X509SVIDResponse]]:
    """An open FetchX509SVID stream with its request sent; cancelled on exit (the agent never ends it)."""
    channel = Channel(path=str(socket_path))
    try:
        async with SpiffeWorkloadAPIStub(channel).FetchX509SVID.open(metadata=HEADER) as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            yield stream
            await stream.cancel()
    finally:
        channel.close()


@dataclass
class Env:
    root: Path
    port: int
    server: subprocess.Popen[bytes] | None = None
    agent: subprocess.Popen[bytes] | None = None
    agent_id: str = ""
    server_config: str = ""
    logs: list[Path] = field(default_factory=list)

    @property
    def admin_socket(self) -> Path:
        return self.root / "srv" / "admin.sock"

    @property
    def socket_path(self) -> Path:
        return self.root / "public" / "api.sock"

    def server_cli(self, *args: str) -> str:
        out = subprocess.run(
            [str(VENV_BIN / "spiffe-server"), *args, "--socket-path", str(self.admin_socket)],
            capture_output=True,
            check=True,
            timeout=60,
        )
        return out.stdout.decode()

    def agent_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "spiffe-agent"), *args, "--socket-path", str(self.socket_path)],
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.root / f"{name}.{len(self.logs)}.log"
        self.logs.append(log)
        return spawn(argv, log, extra_env)

    def start_server(self) -> None:
        argv = [
            str(VENV_BIN / "spiffe-server"), "run", "--trust-domain", TD, "--data-dir", str(self.root / "srv"),
            "--bind-port", str(self.port), "--socket-path", str(self.admin_socket),
        ]
        if self.server_config:
            (self.root / "server.toml").write_text(self.server_config)
            argv += ["--config", str(self.root / "server.toml")]
        self.server = self._spawn("server", argv)

        def healthy() -> bool:
            assert self.server is not None and self.server.poll() is None, self.dump()
            return subprocess.run(
                [str(VENV_BIN / "spiffe-server"), "healthcheck", "--socket-path", str(self.admin_socket)],
                check=False,
                capture_output=True,
                timeout=30,
            ).returncode == 0

        wait_for(healthy, 60, "server health")

    def start_agent(
        self, join_token: str | None, extra_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None
    ) -> None:
        argv = [
            str(VENV_BIN / "spiffe-agent"), "run", "--trust-domain", TD, "--server-port", str(self.port),
            "--data-dir", str(self.root / "agent"), "--socket-path", str(self.socket_path),
            "--log-level", "debug",
        ]
        if "--insecure-bootstrap" not in extra_args:
            argv += ["--trust-bundle", str(self.root / "bootstrap.pem")]
        if join_token:
            argv += ["--join-token", join_token]
        self.agent = self._spawn("agent", [*argv, *extra_args], extra_env)

    def wait_agent_ready(self) -> None:
        def ready() -> bool:
            assert self.agent is not None and self.agent.poll() is None, self.dump()
            return self.agent_cli("healthcheck", check=False).returncode == 0

        wait_for(ready, 60, "agent healthcheck")

    @staticmethod
    def stop(proc: subprocess.Popen[bytes] | None) -> None:
        terminate(proc)

    def create_entry(self, spiffe_id: str, *selectors: str, hint: str = "") -> str:
        """Create an entry parented to the agent through the admin API; returns its id."""
        sels = [types_pb2.Selector(type=t, value=v) for t, _, v in (s.partition(":") for s in selectors)]
        entry = types_pb2.Entry(spiffe_id=spiffe_id, parent_id=self.agent_id, selectors=sels, hint=hint)

        async def call() -> str:
            channel = Channel(path=str(self.admin_socket))
            try:
                created = await AdminAPIStub(channel).CreateEntry(admin_pb2.CreateEntryRequest(entry=entry))
                return str(created.id)
            finally:
                channel.close()

        return asyncio.run(call())

    def dump(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.logs if p.exists())


@contextlib.contextmanager
def running_env(
    entries: list[tuple[str, str]],
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
    *,
    server_config: str = "",
    bootstrap_pem: str | None = None,
    wait_ready: bool = True,
) -> Iterator[Env]:
    """Server + agent; ``entries`` are (SPIFFE ID path, selector) pairs parented to the agent.

    ``bootstrap_pem`` replaces the real server bundle as the agent's trust anchors.
    """
    root = Path(tempfile.mkdtemp(prefix="spiffe-py-agent-it-"))
    os.chmod(root, 0o755)  # a uid-65534 client must be able to reach the socket below it
    e = Env(root=root, port=free_port(), server_config=server_config)
    try:
        e.start_server()
        (root / "bootstrap.pem").write_text(bootstrap_pem or e.server_cli("bundle", "show"))
        token = json.loads(e.server_cli("token", "generate", "--output", "json"))["value"]
        e.agent_id = str(join_token_agent_id(TrustDomain.parse(TD), token))
        for path, selector in entries:
            e.create_entry(f"spiffe://{TD}{path}", selector, hint=path.strip("/"))
        e.start_agent(token, extra_args, extra_env)
        if wait_ready:
            e.wait_agent_ready()
        yield e
    finally:
        e.stop(e.agent)
        e.stop(e.server)
        print(e.dump())
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    with running_env([("/workload", f"unix:uid:{os.geteuid()}")]) as e:
        yield e
