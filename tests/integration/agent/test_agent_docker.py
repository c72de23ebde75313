"""Docker workload attestation against a real Docker engine (tests/conftest.py `docker_engine`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest

from spiffe_agent.attest.docker import (
    DockerAttestor,
    DockerEngineApi,
    container_id_from_cgroup,
    socket_path_from_docker_host,
)
from spiffe_agent.attest.procfs import LinuxProcFs
from tests.integration.agent.conftest import TD, Env, running_env
from tests.support.callers import pid_caller
from tests.support.docker_engine import DockerEngine

pytestmark = pytest.mark.slow


@pytest.fixture
def sleeper(docker_engine: DockerEngine) -> Iterator[str]:
    cid = docker_engine.run(["sleep", "120"], labels={"app": "web"}, env={"MODE": "prod"}, host_python=False)
    try:
        yield cid
    finally:
        docker_engine.remove(cid)


def test_real_cgroup_names_the_container(docker_engine: DockerEngine, sleeper: str) -> None:
    """The kernel's /proc/<pid>/cgroup of a real container yields exactly its ID."""
    pid = docker_engine.pid(sleeper)
    assert container_id_from_cgroup(LinuxProcFs().cgroup(pid)) == sleeper


async def test_docker_attestor_selectors_from_real_engine(docker_engine: DockerEngine, sleeper: str) -> None:
    api = DockerEngineApi(socket_path_from_docker_host(docker_engine.host))
    procfs = LinuxProcFs()
    selectors = await DockerAttestor(procfs, api).attest(pid_caller(docker_engine.pid(sleeper)))
    values = {s.value for s in selectors}
    assert {"label:app:web", "env:MODE=prod", f"image_id:{docker_engine.image}"} <= values
    digest = [v for v in values if v.startswith("image_config_digest:sha256:")]
    assert len(digest) == 1
    assert all(s.type == "docker" for s in selectors)


async def test_docker_attestor_host_process_has_no_selectors(docker_engine: DockerEngine) -> None:
    api = DockerEngineApi(socket_path_from_docker_host(docker_engine.host))
    assert await DockerAttestor(LinuxProcFs(), api).attest(pid_caller(os.getpid())) == frozenset()


@pytest.fixture
def docker_env(docker_engine: DockerEngine) -> Iterator[Env]:
    with running_env(
        [("/web", "docker:label:app:web")],
        extra_args=("--workload-attestor", "unix", "--workload-attestor", "docker"),
        extra_env={"DOCKER_HOST": docker_engine.host},
    ) as e:
        yield e


def test_container_workload_gets_svid_by_docker_label(docker_engine: DockerEngine, docker_env: Env) -> None:
    """A process inside a labelled container fetches its SVID through the bind-mounted socket."""
    code = "from spiffe_agent.cli import main; raise SystemExit(main())"
    argv = [sys.executable, "-c", code, "api", "fetch", "x509", "--socket-path", str(docker_env.socket_path)]
    cid = docker_engine.run([*argv, "--output", "json"], labels={"app": "web"}, share=docker_env.root)
    try:
        assert docker_engine.wait(cid) == 0, docker_engine.logs(cid) + docker_env.dump()
        out = docker_engine.logs(cid)
    finally:
        docker_engine.remove(cid)
    svids = json.loads(out[out.index("[") :])
    assert [s["spiffe_id"] for s in svids] == [f"spiffe://{TD}/web"]
    # the same request from the host (no container) has no identity
    host = docker_env.agent_cli("api", "fetch", "x509", check=False)
    assert host.returncode == 1
    assert "PERMISSION_DENIED" in host.stderr
