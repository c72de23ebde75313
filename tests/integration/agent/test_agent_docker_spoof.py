"""A host process in a cgroup named after a running container must not get that container's selectors.

Real engine, real cgroups, real processes: the spoofing process runs as ``nobody`` on the host and
is moved into a cgroup whose path ends in (or equals) a running container's ``docker/<id>``; the
container's own process keeps its selectors.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from spiffe_agent.attest.docker import (
    DockerAttestor,
    DockerEngineApi,
    container_id_from_cgroup,
    socket_path_from_docker_host,
)
from spiffe_agent.attest.procfs import LinuxProcFs
from spiffe_agent.errors import WorkloadAttestationError
from spiffe_py.selectors import Selector
from tests.support.callers import pid_caller
from tests.support.docker_engine import DockerEngine

pytestmark = pytest.mark.slow

NOBODY = 65534
V1_HIERARCHY = Path("/sys/fs/cgroup/pids")  # any v1 hierarchy would do; pids has no limits set by default


def _hierarchy() -> tuple[Path, str]:
    """A cgroup hierarchy to create cgroups in, and its controllers field in ``/proc/<pid>/cgroup``."""
    if (V1_HIERARCHY / "cgroup.procs").exists():
        return V1_HIERARCHY, "pids"
    return Path("/sys/fs/cgroup"), ""  # cgroup v2: the "0::" line


def _path_in(cgroup_text: str, controllers: str) -> str:
    """The process's cgroup path in the hierarchy named by ``controllers``."""
    for line in cgroup_text.splitlines():
        _, ctrl, path = line.split(":", 2)
        if ctrl == controllers:
            return path
    raise AssertionError(f"no {controllers!r} line in {cgroup_text!r}")


@contextmanager
def _process_in_cgroup(cgroup: Path) -> Iterator[int]:
    """A host process running as nobody, moved into ``cgroup`` (created if missing); its pid."""
    created = []
    for directory in reversed([cgroup, *cgroup.parents]):
        if not directory.exists():
            directory.mkdir()
            created.append(directory)
    proc = subprocess.Popen(["sleep", "300"], user=NOBODY, group=NOBODY)
    try:
        (cgroup / "cgroup.procs").write_text(str(proc.pid))
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()
        for directory in reversed(created):
            for _ in range(50):  # the kernel frees an emptied cgroup shortly after its last task exits
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


@pytest.fixture
def container(docker_engine: DockerEngine) -> Iterator[str]:
    cid = docker_engine.run(["sleep", "300"], labels={"app": "web"}, host_python=False)
    try:
        yield cid
    finally:
        docker_engine.remove(cid)


@pytest.fixture
def attestor(docker_engine: DockerEngine) -> DockerAttestor:
    return DockerAttestor(LinuxProcFs(), DockerEngineApi(socket_path_from_docker_host(docker_engine.host)))


async def test_host_process_in_delegated_cgroup_named_docker_id_gets_no_docker_selectors(
    docker_engine: DockerEngine, container: str, attestor: DockerAttestor
) -> None:
    """A user's own cgroup ``/<delegated>/docker/<real id>`` names no container; the real container still does.

    Before anchoring, the rightmost 64-hex segment of any cgroup line was taken as the container ID,
    so this host process got the container's ``docker:label:app:web``.
    """
    root, _ = _hierarchy()
    spoof = root / f"spiffe-py-spoof-{uuid.uuid4().hex[:8]}" / "docker" / container
    with _process_in_cgroup(spoof) as pid:
        assert f"/docker/{container}" in LinuxProcFs().cgroup(pid)  # the trap is set
        assert os.stat(f"/proc/{pid}").st_uid == NOBODY
        assert await attestor.attest(pid_caller(pid)) == frozenset()
    real = await attestor.attest(pid_caller(docker_engine.pid(container)))
    assert Selector("docker", "label:app:web") in real


async def test_host_process_moved_into_container_cgroup_is_refused(
    docker_engine: DockerEngine, container: str, attestor: DockerAttestor
) -> None:
    """A host process in the container's very cgroup (one hierarchy) is not in its namespaces: refused.

    The path is exactly the runtime's layout, so only the engine check can tell: the caller's
    mount and pid namespaces are the host's, not those of the container's init.
    """
    root, controllers = _hierarchy()
    container_pid = docker_engine.pid(container)
    path = _path_in(LinuxProcFs().cgroup(container_pid), controllers)
    assert path == f"/docker/{container}" or container in path
    with _process_in_cgroup(root / path.lstrip("/")) as pid:
        assert container_id_from_cgroup(LinuxProcFs().cgroup(pid)) == container
        with pytest.raises(WorkloadAttestationError, match="not in its namespaces"):
            await attestor.attest(pid_caller(pid))
    assert Selector("docker", "label:app:web") in await attestor.attest(pid_caller(container_pid))


async def test_process_exec_into_container_keeps_selectors(
    docker_engine: DockerEngine, container: str, attestor: DockerAttestor
) -> None:
    """``docker exec`` joins the container's namespaces: the exec'd process is attested as the container."""
    docker_engine.exec_detached(container, ["sleep", "301"])
    pid = _wait_for_pid(["sleep", "301"])
    assert pid != docker_engine.pid(container)
    assert container_id_from_cgroup(LinuxProcFs().cgroup(pid)) == container
    assert Selector("docker", "label:app:web") in await attestor.attest(pid_caller(pid))


def _wait_for_pid(argv: list[str]) -> int:
    wanted = "\0".join(argv).encode()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if (entry / "cmdline").read_bytes().rstrip(b"\0") == wanted:
                        return int(entry.name)
                except OSError:
                    continue
        time.sleep(0.1)
    raise AssertionError(f"no process {argv!r}")


async def test_restarted_container_is_recognised_while_its_entry_is_cached(
    docker_engine: DockerEngine, container: str
) -> None:
    """Same ID, new init and namespaces: the stale cached namespaces make the agent ask the engine again."""
    api = DockerEngineApi(socket_path_from_docker_host(docker_engine.host))
    attestor = DockerAttestor(LinuxProcFs(), api, monotonic=lambda: 1000.0)  # the cache never expires
    before = docker_engine.pid(container)
    assert Selector("docker", "label:app:web") in await attestor.attest(pid_caller(before))
    docker_engine.restart(container)
    after = docker_engine.pid(container)
    assert after not in (0, before)
    assert Selector("docker", "label:app:web") in await attestor.attest(pid_caller(after))
