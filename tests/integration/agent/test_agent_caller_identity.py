"""The caller behind a Workload API connection cannot change identity after connecting (real agent, real processes).

A process that connects and then execs, keeping the connected socket, must not get the
identity of what it was at connect time nor of what it became: a setgid exec and an exec of
another binary are refused with PERMISSION_DENIED. A process whose pid was reused between
accept and its first call is refused too. As `nobody`, a flood of connections over the per-uid
cap gets RESOURCE_EXHAUSTED while a root workload keeps getting its SVID.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
FD_CALLER = str(REPO / "tests" / "support" / "fd_caller.py")
PYTHON = os.path.realpath(sys.executable)
ROOT_ID = "spiffe://example.org/root"
NOBODY = 65534
ACCEPTED = 0.5  # seconds for the agent to accept a connection (it does so at once; this is slack)


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProc]:
    if os.geteuid() != 0:
        pytest.skip("needs root: setgid binaries, ns_last_pid and a setuid(nobody) client")
    with ServerProc.start() as srv:
        os.chmod(srv.data_dir.parent, 0o755)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))  # the agent starts with a low soft limit
        try:
            started = AgentProc.start(srv, "a1")
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        with started as agent:
            srv.cli("entry", "create", "--spiffe-id", ROOT_ID, "--parent-id", agent.agent_id,
                    "--selector", "unix:uid:0")
            agent.wait_ready()
            _wait_for_svid(agent)
            yield agent


def _env() -> dict[str, str]:
    return {**os.environ, "FD_CALLER_PATH": os.pathsep.join([str(REPO), *sys.path])}


def _wait_for_svid(agent: AgentProc) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run([PYTHON, FD_CALLER, "connect", str(agent.socket_path), PYTHON, FD_CALLER, "call"],
                             input="\n", capture_output=True, text=True, env=_env(), timeout=30, check=False)
        if ROOT_ID in out.stdout:
            return
        time.sleep(0.3)
    raise AssertionError("the root entry never got an SVID")


def _connect_exec_call(agent: AgentProc, first: str, then: str) -> dict[str, object]:
    """Run ``first`` to connect, let the agent accept, exec ``then`` on the same socket and call."""
    proc = subprocess.Popen([first, FD_CALLER, "connect", str(agent.socket_path), then, FD_CALLER, "call"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().strip() == "connected"
        time.sleep(ACCEPTED)
        proc.stdin.write("\n")
        proc.stdin.flush()
        result: dict[str, object] = json.loads(proc.stdout.readline())
        return result
    finally:
        proc.kill()
        proc.wait()


def _copy_python(tmp_path: Path, name: str, *, setgid: int | None = None) -> str:
    path = tmp_path / name
    shutil.copy(PYTHON, path)
    if setgid is not None:
        os.chown(path, 0, setgid)
        os.chmod(path, 0o2755)
    os.chmod(tmp_path, 0o755)
    return str(path)


def test_a_process_exec_ing_the_same_binary_keeps_its_identity(agent: AgentProc, tmp_path: Path) -> None:
    """Control: the inherited-socket client works when nothing about the caller changed."""
    copy = _copy_python(tmp_path, "python-copy")
    result = _connect_exec_call(agent, copy, copy)
    assert result == {"status": "OK", "message": "", "spiffe_ids": [ROOT_ID]}


def test_exec_of_another_binary_on_the_inherited_socket_is_refused(agent: AgentProc, tmp_path: Path) -> None:
    """Same uid, same gid, another executable: it must not get the identity attested at connect."""
    copy = _copy_python(tmp_path, "python-copy")
    result = _connect_exec_call(agent, copy, PYTHON)
    assert result["status"] == "PERMISSION_DENIED", result
    assert "runs another executable than when it connected" in str(result["message"])


def test_setgid_exec_after_connect_is_refused(agent: AgentProc, tmp_path: Path) -> None:
    """A setgid binary exec'd after connecting gains gid 4242; the agent must not attest it."""
    setgid = _copy_python(tmp_path, "python-setgid", setgid=4242)
    result = _connect_exec_call(agent, PYTHON, setgid)
    assert result["status"] == "PERMISSION_DENIED", result
    assert "changed its uid, gid or groups since it connected" in str(result["message"])


REUSER = """
import os, sys
sock = __import__("socket").socket(__import__("socket").AF_UNIX)
sock.connect(sys.argv[1])
fd = sock.detach()
os.set_inheritable(fd, True)
print(os.getpid(), flush=True)
sys.stdin.readline()
if os.fork() == 0:  # the child keeps the socket; the connecting process exits
    sys.stdin.readline()
    os.execv(sys.argv[2], [sys.argv[2], sys.argv[3], "call", str(fd)])
os._exit(0)
"""


def _reuse_pid(pid: int) -> subprocess.Popen[bytes] | None:
    """A root `sleep` that got ``pid``, or None if another process took it first."""
    with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
        fh.write(str(pid - 1))
    proc = subprocess.Popen(["sleep", "30"])
    if proc.pid == pid:
        return proc
    proc.kill()
    proc.wait()
    return None


def test_a_pid_reused_between_accept_and_the_first_call_is_refused(agent: AgentProc) -> None:
    """The connecting process exits (a forked child keeps the socket) and a root process takes its pid."""
    for _ in range(10):  # other processes on the box may take the pid first
        conn = subprocess.Popen([PYTHON, "-c", REUSER, str(agent.socket_path), PYTHON, FD_CALLER],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
        assert conn.stdin is not None and conn.stdout is not None
        reused = None
        try:
            pid = int(conn.stdout.readline())
            time.sleep(ACCEPTED)
            conn.stdin.write("\n")
            conn.stdin.flush()
            conn.wait(10)  # the connecting process is gone and reaped
            reused = _reuse_pid(pid)
            if reused is None:
                continue
            conn.stdin.write("\n")  # the forked child now calls over the connection
            conn.stdin.flush()
            result = json.loads(conn.stdout.readline())
            assert result["status"] == "UNAUTHENTICATED", result
            assert "has exited" in result["message"]
            return
        finally:
            conn.stdin.close()
            conn.stdout.close()
            if reused is not None:
                reused.kill()
                reused.wait()
    pytest.fail("could not get the connecting process's pid reused")


FLOOD = """
import asyncio, json, os, sys
sys.path[:0] = os.environ["FD_CALLER_PATH"].split(os.pathsep)
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub

async def main():
    os.setgid(65534)
    os.setuid(65534)
    channels = [Channel(path=sys.argv[1]) for _ in range(int(sys.argv[2]))]
    statuses = {}
    for channel in channels:  # each call opens its channel's connection; all stay open
        try:
            await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(
                workload_pb2.JWTSVIDRequest(audience=["a"]), metadata={"workload.spiffe.io": "true"}, timeout=10)
            key = "OK"
        except GRPCError as err:
            key = f"{err.status.name}: {err.message}"
        statuses[key] = statuses.get(key, 0) + 1
    print(json.dumps(statuses), flush=True)
    sys.stdin.readline()  # hold every connection open until told

asyncio.run(main())
"""


def test_a_connection_flood_by_nobody_is_capped_per_uid_and_root_still_gets_its_svid(agent: AgentProc) -> None:
    flood = subprocess.Popen([PYTHON, "-c", FLOOD, str(agent.socket_path), "100"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    assert flood.stdin is not None and flood.stdout is not None
    try:
        statuses = json.loads(flood.stdout.readline())
        over = statuses.get(f"RESOURCE_EXHAUSTED: too many connections for uid {NOBODY} (max 64)", 0)
        assert over == 36, statuses  # the default cap of 64 per uid
        result = subprocess.run([PYTHON, FD_CALLER, "connect", str(agent.socket_path), PYTHON, FD_CALLER, "call"],
                                input="\n", capture_output=True, text=True, env=_env(), timeout=30, check=True)
        assert json.loads(result.stdout.splitlines()[-1]) == {"status": "OK", "message": "", "spiffe_ids": [ROOT_ID]}
    finally:
        flood.kill()
        flood.wait()
    assert agent.proc is not None
    limits = Path(f"/proc/{agent.proc.pid}/limits").read_text()
    soft, hard = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()[3:5]
    assert soft == hard != "1024"  # raised at start from the 1024 it was started with
