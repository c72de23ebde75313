"""Run real ``spiffe-agent`` processes against a :class:`~tests.support.server_proc.ServerProc`.

Usage::

    with ServerProc.start() as srv, AgentProc.start(srv, "a1") as agent:
        srv.cli("entry", "create", "--spiffe-id", "spiffe://example.org/w",
                "--parent-id", agent.agent_id, "--selector", f"unix:uid:{os.geteuid()}")
        agent.wait_ready()
        client = WorkloadApiClient(agent.address)

Each agent gets its own data dir and Workload API socket under the server's temp
directory (short paths); ``agent.log_text()`` returns what it logged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from spiffe_py.spiffeid import TrustDomain
from spiffe_server.nodeattest.join_token import join_token_agent_id
from tests.support.proc import spawn, terminate
from tests.support.server_proc import ServerError, ServerProc

READY_TIMEOUT_S = 60.0
AGENT = [str(Path(sys.executable).parent / "spiffe-agent")]  # agent.cli has no __main__


class AgentProc:
    """One spiffe-agent subprocess attested with a fresh join token, or with the node attestor args given."""

    def __init__(self, server: ServerProc, name: str, node_args: tuple[str, ...], agent_id: str) -> None:
        self.server = server
        self.root = server.data_dir.parent / name
        self.socket_path = self.root / "public" / "api.sock"
        self.log_path = self.root.with_suffix(".log")
        self.agent_id = agent_id
        self._node_args = node_args
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, server: ServerProc, name: str, extra_args: tuple[str, ...] = (), *,
              node_attestation: tuple[tuple[str, ...], str] | None = None) -> AgentProc:
        """Write the bootstrap bundle and launch the agent (not yet waited for).

        ``node_attestation`` is (flags, expected agent ID); by default a fresh join token.
        """
        if node_attestation is None:
            token = server.cli_json("token", "generate")["value"]
            agent_id = join_token_agent_id(TrustDomain.parse(server.trust_domain), token)
            node_attestation = (("--join-token", token), str(agent_id))
        agent = cls(server, name, *node_attestation)
        agent.root.mkdir(parents=True, exist_ok=True)
        (agent.root / "bootstrap.pem").write_text(server.cli("bundle", "show").stdout)
        agent.launch(extra_args)
        return agent

    @property
    def address(self) -> str:
        """The Workload API address for clients."""
        return f"unix://{self.socket_path}"

    def launch(self, extra_args: tuple[str, ...] = ()) -> None:
        """Start ``spiffe-agent run`` (appending to the log)."""
        argv = [*AGENT, "run", "--trust-domain", self.server.trust_domain, "--server-port", str(self.server.port),
                "--data-dir", str(self.root / "data"), "--socket-path", str(self.socket_path),
                "--trust-bundle", str(self.root / "bootstrap.pem"), *self._node_args,
                "--log-level", "debug", *extra_args]
        self.proc = spawn(argv, self.log_path)

    def wait_ready(self) -> None:
        """Wait until ``spiffe-agent healthcheck`` passes (attested and synced)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise ServerError(f"agent exited:\n{self.log_text()}")
            if self.healthcheck().returncode == 0:
                return
            time.sleep(0.2)
        raise ServerError(f"agent not ready after {READY_TIMEOUT_S}s:\n{self.log_text()}")

    def healthcheck(self) -> subprocess.CompletedProcess[str]:
        """Run ``spiffe-agent healthcheck`` against this agent's socket."""
        return subprocess.run([*AGENT, "healthcheck", "--socket-path", str(self.socket_path)],
                              capture_output=True, text=True, check=False, timeout=60)

    def log_text(self) -> str:
        """Everything the agent has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        code, self.proc = terminate(self.proc), None
        return code

    def close(self) -> None:
        """Stop the agent and remove its directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> AgentProc:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
