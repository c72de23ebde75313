"""The Workload API socket also serves gRPC server reflection and the standard gRPC health service.

WE-17 (spiffe-conformance.md): a server SHOULD support gRPC Server Reflection, so clients can
learn which services the endpoint offers beyond the Workload API (WE-16: new services, never
extensions of SpiffeWorkloadAPI). Neither needs an SVID: they answer before the agent has one.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from tests.integration.agent.conftest import VENV_BIN, free_port, wait_for
from tests.support.agent_proc import AgentProc
from tests.support.server_proc import ServerProc

pytestmark = pytest.mark.slow


async def _health(sock: Path, service: str = "") -> int:
    channel = Channel(path=str(sock))
    try:
        response = await HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=10)
        return int(response.status)
    finally:
        channel.close()


async def _services(sock: Path) -> set[str]:
    channel = Channel(path=str(sock))
    try:
        async with ServerReflectionStub(channel).ServerReflectionInfo.open(timeout=10) as stream:
            await stream.send_message(ServerReflectionRequest(list_services=""), end=True)
            response = await stream.recv_message()
            assert response is not None
            names = {s.name for s in response.list_services_response.service}
            file_request = ServerReflectionRequest(file_containing_symbol="SpiffeWorkloadAPI")
        async with ServerReflectionStub(channel).ServerReflectionInfo.open(timeout=10) as stream:
            await stream.send_message(file_request, end=True)
            described = await stream.recv_message()
            assert described is not None
            assert described.file_descriptor_response.file_descriptor_proto, "no descriptor for the Workload API"
        return names
    finally:
        channel.close()


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="spiffe-py-agent-refl-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_reflection_and_health_answer_before_the_agent_has_an_identity_we17(root: Path) -> None:
    sock = root / "public" / "api.sock"
    argv = [str(VENV_BIN / "spiffe-agent"), "run", "--trust-domain", "example.org", "--server-port",
            str(free_port()), "--data-dir", str(root / "data"), "--socket-path", str(sock),
            "--insecure-bootstrap", "--join-token", "t0k3n"]
    agent = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(sock.exists, 30, "agent socket")
        services = asyncio.run(_services(sock))
        assert {"SpiffeWorkloadAPI", "grpc.health.v1.Health", "spiffepy.agent.v1.RevocationWatch"} <= services
        # the server is unreachable: no identity yet, so not serving (but answering)
        assert asyncio.run(_health(sock)) == HealthCheckResponse.NOT_SERVING
        assert asyncio.run(_health(sock, "SpiffeWorkloadAPI")) == HealthCheckResponse.NOT_SERVING
    finally:
        agent.terminate()
        agent.communicate(timeout=30)


def test_health_is_serving_once_the_agent_is_attested() -> None:
    with ServerProc.start() as server:
        agent = AgentProc.start(server, "agent")
        try:
            agent.wait_ready()
            assert asyncio.run(_health(agent.socket_path)) == HealthCheckResponse.SERVING
            assert asyncio.run(_health(agent.socket_path, "SpiffeWorkloadAPI")) == HealthCheckResponse.SERVING
        finally:
            agent.close()
