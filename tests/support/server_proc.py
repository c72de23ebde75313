"""Run a real ``spiffe-server`` process for integration tests and drive it with its CLI.

Usage::

    with ServerProc.start(trust_domain="example.org") as srv:
        token = srv.cli_json("token", "generate")["value"]
        bundle_pem = srv.cli("bundle", "show", "--format", "pem").stdout
        srv.restart()                       # same data dir, same CA

The data dir lives under /tmp (short Unix socket paths) and is removed on exit;
``srv.log_text()`` returns everything the server logged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.proc import spawn, terminate

START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerError(AssertionError):
    """The server did not start or a CLI call failed unexpectedly."""


class ServerProc:
    """One spiffe-server subprocess plus helpers to call its CLI."""

    def __init__(self, data_dir: Path, *, trust_domain: str, port: int, extra_args: Sequence[str],
                 config_text: str | None, owns_dir: bool, socket_path: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.trust_domain = trust_domain
        self.port = port
        self.socket_path = socket_path or data_dir / "api.sock"
        self.extra_args = list(extra_args) + (["--socket-path", str(socket_path)] if socket_path else [])
        self.config_path: Path | None = None
        stem = f"{data_dir.name}-{port}"
        if config_text is not None:
            self.config_path = data_dir.parent / f"{stem}.toml"
            self.config_path.write_text(config_text)
        self.log_path = data_dir.parent / f"{stem}.log"
        self._owns_dir = owns_dir
        self.env = env or {}  # extra environment of the server process (e.g. SSL_CERT_FILE)
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, *, trust_domain: str = "example.org", extra_args: Sequence[str] = (),
              config_text: str | None = None, data_dir: Path | None = None,
              socket_path: Path | None = None, env: dict[str, str] | None = None) -> ServerProc:
        """Launch ``spiffe-server run`` and wait until ``healthcheck`` passes.

        Give an existing ``data_dir`` (and another ``socket_path``) to run a second server on the
        same keys, e.g. two servers sharing one PostgreSQL database.
        """
        owns = data_dir is None
        if data_dir is None:
            data_dir = Path(tempfile.mkdtemp(prefix="ss-", dir="/tmp")) / "d"
        srv = cls(data_dir, trust_domain=trust_domain, port=free_port(), extra_args=extra_args,
                  config_text=config_text, owns_dir=owns, socket_path=socket_path, env=env)
        srv.launch()
        return srv

    @property
    def address(self) -> tuple[str, int]:
        """Where the TCP (agent API) listener is."""
        return ("127.0.0.1", self.port)

    def run_args(self) -> list[str]:
        """The ``run`` command line."""
        args = [sys.executable, "-m", "spiffe_server.cli", "run", "--trust-domain", self.trust_domain,
                "--data-dir", str(self.data_dir), "--bind-port", str(self.port), *self.extra_args]
        if self.config_path is not None:
            args += ["--config", str(self.config_path)]
        return args

    def launch(self) -> None:
        """Start the process (appending to the log) and wait until it is healthy."""
        self.proc = spawn(self.run_args(), self.log_path, self.env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"server exited with {self.proc.returncode}:\n{self.log_text()}")
            if self.socket_path.exists() and self.cli("healthcheck", check=False).returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"server not healthy after {START_TIMEOUT_S}s:\n{self.log_text()}")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        code, self.proc = terminate(self.proc), None
        return code

    def restart(self) -> None:
        """Stop and start again on the same data dir and port."""
        self.stop()
        self.launch()

    def cli(self, *args: str, check: bool = True, stdin: bytes | None = None,
            socket_path: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``spiffe-server <args> --socket-path <ours>``; ``check`` asserts exit status 0."""
        cmd = [sys.executable, "-m", "spiffe_server.cli", *args, "--socket-path", str(socket_path or self.socket_path)]
        result = subprocess.run(cmd, check=False, input=stdin.decode() if stdin is not None else None,
                                capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if check and result.returncode != 0:
            raise ServerError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def cli_json(self, *args: str) -> Any:
        """Run a CLI command with ``--output json`` and parse its stdout."""
        return json.loads(self.cli(*args, "--output", "json").stdout)

    def log_text(self) -> str:
        """Everything the server process has logged so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        """Stop the server and remove its files (if this object created them)."""
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    def __enter__(self) -> ServerProc:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
