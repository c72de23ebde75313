"""The agent's socket path: every ancestor must be safe, and root's agent serves under /run by default.

Real ``spiffe-agent`` processes, with no server (the socket directory is prepared before the first
attestation); the squatting directory is made by a real process running as ``nobody``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.agent.conftest import VENV_BIN, free_port, wait_for

pytestmark = pytest.mark.slow

NOBODY = 65534
AGENT = str(VENV_BIN / "spiffe-agent")
REFUSAL_TIMEOUT = 30.0
ROOT_SOCKET_PATH = "/run/spiffe-py-agent/public/api.sock"  # the documented default for root


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="spiffe-py-agent-sockdir-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _agent_argv(data_dir: Path, *socket_args: str) -> list[str]:
    return [
        AGENT, "run", "--trust-domain", "example.org", "--server-port", str(free_port()),
        "--data-dir", str(data_dir), "--insecure-bootstrap", "--join-token", "t0k3n", *socket_args,
    ]


@pytest.fixture
def squatted() -> Iterator[Path]:
    """A directory under /tmp made by ``nobody`` (as the default /tmp/spiffe-py-agent could be)."""
    path = Path(f"/tmp/spiffe-py-squat-{uuid.uuid4().hex[:8]}")
    subprocess.run(["mkdir", "-m", "0755", str(path)], user=NOBODY, group=NOBODY, check=True, timeout=30)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_agent_refuses_socket_below_a_directory_nobody_created(squatted: Path, data_dir: Path) -> None:
    """``nobody`` pre-creates the parent of the socket directory: the agent must not serve there.

    The directory the agent creates below it would be the agent's, but ``nobody`` can rename it
    away, put a directory with its own socket in its place and collect the workloads' SVIDs.
    """
    assert squatted.stat().st_uid == NOBODY
    sock = squatted / "public" / "api.sock"
    agent = subprocess.Popen(_agent_argv(data_dir, "--socket-path", str(sock)), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    try:
        out, _ = agent.communicate(timeout=REFUSAL_TIMEOUT)
    except subprocess.TimeoutExpired:
        agent.terminate()
        out, _ = agent.communicate(timeout=REFUSAL_TIMEOUT)
        pytest.fail(f"the agent served below a directory owned by nobody: {out.decode(errors='replace')}")
    log = out.decode(errors="replace")
    assert agent.returncode == 1, log
    assert f"unsafe socket directory {str(squatted)!r}: owned by uid {NOBODY}" in log
    assert not (squatted / "public").exists()  # nothing was made inside nobody's directory
    assert "Traceback" not in log


def test_root_agent_serves_under_run_by_default_and_clients_find_it(data_dir: Path) -> None:
    """Without ``--socket-path`` root's agent serves at /run/spiffe-py-agent/public/api.sock, where
    the client commands look first."""
    assert os.geteuid() == 0
    base = Path(ROOT_SOCKET_PATH).parents[1]
    if base.exists():
        pytest.skip(f"{base} exists already (an agent installed on this machine?)")
    sock = Path(ROOT_SOCKET_PATH)
    agent = subprocess.Popen(_agent_argv(data_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(sock.exists, 30, "agent socket at the default path")
        st = os.stat(sock.parent)
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)
        out = subprocess.run([AGENT, "api", "fetch", "x509"], capture_output=True, text=True, check=False, timeout=30)
        assert out.returncode == 1
        assert "UNAVAILABLE" in out.stderr  # it reached the agent (not yet synced), not "cannot reach"
    finally:
        agent.terminate()
        log, _ = agent.communicate(timeout=30)
        shutil.rmtree(base, ignore_errors=True)
    assert agent.returncode == 0, log.decode(errors="replace")
