"""The test Docker engine gives the agent's docker attestor what it relies on.

The attestor maps a caller PID (SO_PEERCRED) to a container through the HOST view of
/proc/<pid>/cgroup, then looks the container up by ID. These tests prove that chain works on
this machine, and that a container can run the host Python (workloads in tests do).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.docker_engine import DockerEngine


def test_container_pid_cgroup_names_container_id(docker_engine: DockerEngine) -> None:
    """Host /proc/<pid>/cgroup of a containerised process contains the full container ID."""
    cid = docker_engine.run(["sleep", "300"], labels={"app": "smoke"}, host_python=False)
    try:
        assert len(cid) == 64, cid
        pid = docker_engine.pid(cid)
        assert pid > 0
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
        print(f"host view of /proc/{pid}/cgroup:\n{cgroup}")  # reported by -rP for the record
        assert cid in cgroup, cgroup
    finally:
        docker_engine.remove(cid)


def test_container_runs_host_python(docker_engine: DockerEngine, tmp_path: Path) -> None:
    """sys.executable runs inside the busybox container via the read-only binds, with our env."""
    script = "import cryptography, os, sys, pathlib; pathlib.Path(sys.argv[1]).write_text('ok'); print(os.environ['X'])"
    out = tmp_path / "out.txt"
    cid = docker_engine.run([sys.executable, "-c", script, str(out)], env={"X": "from-env"}, share=tmp_path)
    try:
        assert docker_engine.wait(cid) == 0, docker_engine.logs(cid)
        assert docker_engine.logs(cid).strip() == "from-env"
        # The shared directory is writable from inside (a Unix socket will travel this way).
        assert out.read_text() == "ok"
    finally:
        docker_engine.remove(cid)
