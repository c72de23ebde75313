"""The agent process on its own (server unreachable): UNAVAILABLE before the first sync, clean SIGTERM."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent.conftest import VENV_BIN, free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="spiffe-py-agent-solo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unsynced_agent_answers_unavailable_and_stops_cleanly_we13(root: Path) -> None:
    sock = root / "public" / "api.sock"
    argv = [
        str(VENV_BIN / "spiffe-agent"), "run", "--trust-domain", "example.org", "--server-port", str(free_port()),
        "--data-dir", str(root / "data"), "--socket-path", str(sock), "--insecure-bootstrap", "--join-token", "t0k3n",
    ]
    agent = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(sock.exists, 30, "agent socket")
        out = subprocess.run(
            [str(VENV_BIN / "spiffe-agent"), "api", "fetch", "x509", "--socket-path", str(sock)],
            capture_output=True, text=True, check=False, timeout=30,
        )
        assert out.returncode == 1
        assert "UNAVAILABLE" in out.stderr
        assert os.stat(sock).st_mode & 0o777 == 0o777
    finally:
        agent.terminate()
        log, _ = agent.communicate(timeout=30)
    assert agent.returncode == 0, log.decode()
    assert not sock.exists()
    assert b"t0k3n" not in log  # the join token never reaches the log
    assert b"insecure bootstrap" in log
