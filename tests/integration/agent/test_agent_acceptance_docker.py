"""Issue 4 acceptance 3: real containers against an agent running the docker attestor.

Extends test_agent_docker.py (label match via our CLI) with the acceptance cases: py-spiffe inside an
``app=tool`` container, an ``image_id`` entry, and a container whose labels match nothing. The
container runs the host interpreter through read-only binds; the agent's socket directory is shared.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from spiffe_agent.attest.docker import INSPECT_CACHE_TTL, ContainerInfo, DockerAttestor, DockerEngineApi
from spiffe_agent.attest.docker import socket_path_from_docker_host as docker_socket
from spiffe_agent.attest.procfs import LinuxProcFs
from tests.integration.agent.conftest import TD, Env, running_env
from tests.support.callers import pid_caller
from tests.support.docker_engine import DockerEngine

pytestmark = pytest.mark.slow

DOCKER_ARGS = ("--workload-attestor", "unix", "--workload-attestor", "docker")
TOOL_ID = f"spiffe://{TD}/tool"
IMAGE_ID = f"spiffe://{TD}/busybox"

# py-spiffe (unmodified third-party client) run inside the container: prints the SVID's ID and bundle size.
PY_SPIFFE_FETCH = """
import json, sys
from spiffe import WorkloadApiClient
with WorkloadApiClient("unix://" + sys.argv[1]) as client:
    ctx = client.fetch_x509_context()
    bundle = ctx.x509_bundle_set.get_bundle_for_trust_domain(ctx.default_svid.spiffe_id.trust_domain)
    print(json.dumps({"id": str(ctx.default_svid.spiffe_id), "authorities": len(bundle.x509_authorities)}))
"""


@contextmanager
def docker_agent(engine: DockerEngine, entries: list[tuple[str, str]]) -> Iterator[Env]:
    """Server + agent with the unix and docker attestors, talking to the test engine."""
    with running_env(entries, extra_args=DOCKER_ARGS, extra_env={"DOCKER_HOST": engine.host}) as e:
        yield e


def run_in_container(engine: DockerEngine, env: Env, argv: list[str], labels: dict[str, str]) -> tuple[int, str]:
    """Run argv (host python) in a labelled container sharing the agent's socket dir; exit code and output."""
    cid = engine.run(argv, labels=labels, share=env.root)
    try:
        return engine.wait(cid), engine.logs(cid)
    finally:
        engine.remove(cid)


def cli_fetch(env: Env) -> list[str]:
    """Our CLI's `api fetch x509` command line, run with the host interpreter."""
    code = "from spiffe_agent.cli import main; raise SystemExit(main())"
    socket = str(env.socket_path)
    return [sys.executable, "-c", code, "api", "fetch", "x509", "--socket-path", socket, "--output", "json"]


@pytest.fixture(scope="module")
def label_env(docker_engine: DockerEngine) -> Iterator[Env]:
    with docker_agent(docker_engine, [("/tool", "docker:label:app:tool")]) as e:
        yield e


def test_py_spiffe_in_tool_container_gets_label_entry_svid(docker_engine: DockerEngine, label_env: Env) -> None:
    """A process in a container labelled app=tool gets the docker:label:app:tool SVID (py-spiffe client)."""
    argv = [sys.executable, "-c", PY_SPIFFE_FETCH, str(label_env.socket_path)]
    code, out = run_in_container(docker_engine, label_env, argv, {"app": "tool"})
    assert code == 0, out + label_env.dump()
    got = json.loads(out[out.index("{") :])
    assert got == {"id": TOOL_ID, "authorities": 1}


def test_host_process_does_not_get_label_entry_svid(label_env: Env) -> None:
    """The same request from the host, outside any container, has no identity."""
    host = label_env.agent_cli("api", "fetch", "x509", check=False)
    assert host.returncode == 1
    assert "PERMISSION_DENIED" in host.stderr
    assert "tool" not in host.stdout


def test_container_with_unmatched_labels_is_permission_denied_we14(docker_engine: DockerEngine, label_env: Env) -> None:
    """A container whose labels match no entry gets PERMISSION_DENIED, not another workload's SVID."""
    code, out = run_in_container(docker_engine, label_env, cli_fetch(label_env), {"app": "other", "tier": "tool"})
    assert code == 1, out
    assert "PERMISSION_DENIED" in out
    assert TOOL_ID not in out


def test_image_id_entry_matches_container_not_host(docker_engine: DockerEngine) -> None:
    """A docker:image_id:<image the container was started from> entry issues to any container of that image."""
    with docker_agent(docker_engine, [("/busybox", f"docker:image_id:{docker_engine.image}")]) as env:
        code, out = run_in_container(docker_engine, env, cli_fetch(env), {"app": "anything"})
        host = env.agent_cli("api", "fetch", "x509", check=False)
    assert code == 0, out
    assert [s["spiffe_id"] for s in json.loads(out[out.index("[") :])] == [IMAGE_ID]
    assert host.returncode == 1
    assert "PERMISSION_DENIED" in host.stderr


class CountingEngineApi(DockerEngineApi):
    """The real engine API, counting inspect calls."""

    calls = 0

    def inspect(self, container_id: str) -> ContainerInfo:
        self.calls += 1
        return super().inspect(container_id)


async def test_inspect_cache_is_per_container_and_expires(docker_engine: DockerEngine) -> None:
    """Selectors are reused only for the same container ID and only within the TTL."""
    api = CountingEngineApi(docker_socket(docker_engine.host))
    clock = [1000.0]
    attestor = DockerAttestor(LinuxProcFs(), api, monotonic=lambda: clock[0])
    tool = docker_engine.run(["sleep", "120"], labels={"app": "tool"}, host_python=False)
    other = docker_engine.run(["sleep", "120"], labels={"app": "other"}, host_python=False)
    try:
        tool_pid, other_pid = docker_engine.pid(tool), docker_engine.pid(other)
        first = await attestor.attest(pid_caller(tool_pid))
        assert await attestor.attest(pid_caller(tool_pid)) == first
        assert api.calls == 1
        assert "label:app:tool" in {s.value for s in first}
        other_selectors = {s.value for s in await attestor.attest(pid_caller(other_pid))}
        assert "label:app:other" in other_selectors
        assert "label:app:tool" not in other_selectors
        assert api.calls == 2
        clock[0] += INSPECT_CACHE_TTL
        assert await attestor.attest(pid_caller(tool_pid)) == first
        assert api.calls == 3
    finally:
        docker_engine.remove(tool)
        docker_engine.remove(other)
