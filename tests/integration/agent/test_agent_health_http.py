"""The agent's HTTP /live and /ready, expired SVIDs refused, JSON logs and expiry gauges, with real processes.

One server and one agent with 12 s SVIDs (agent and workload), started with ``--health-port`` and
``--log-format json``. The agent renews its SVID once (a planned sync restart, logged at debug),
then the server is stopped: nothing can be renewed, and ``/ready`` must turn false within 1 s of
the first SVID expiring (gRPC health on the socket turns NOT_SERVING too); the open FetchX509SVID
stream and a new one are refused with UNAVAILABLE and a message that says the SVID expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest
from cryptography import x509
from grpclib.client import Channel, Stream
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from spiffe_py import _pem
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from tests.integration.agent.conftest import HEADER, TD, Env, running_env, wait_for, x509_stream
from tests.support.server_proc import free_port

pytestmark = pytest.mark.slow

UID_SELECTOR = f"unix:uid:{os.geteuid()}"
TTL = 12


def _get(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(4096)


def _gauge(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def _agent_not_after(e: Env) -> float:
    pem = (e.root / "agent" / "agent-svid.pem").read_bytes()
    return x509.load_pem_x509_certificates(pem)[0].not_valid_after_utc.timestamp()


@pytest.fixture(scope="module")
def health_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, int, int]]:
    health_port, metrics_port = free_port(), free_port()
    config = tmp_path_factory.mktemp("agent-health") / "agent.toml"
    config.write_text(f"metrics_port = {metrics_port}\n")
    with running_env([("/h", UID_SELECTOR)], ("--health-port", str(health_port), "--log-format", "json",
                                               "--config", str(config)),
                     server_config=f'default_x509_svid_ttl = "{TTL}s"\n', wait_ready=False) as e:
        yield e, health_port, metrics_port


def test_ready_turns_false_within_a_second_of_expiry_and_expired_svids_are_refused(
        health_env: tuple[Env, int, int]) -> None:
    e, health_port, metrics_port = health_env
    assert _wait_status(health_port, "/live", 200, 60)
    assert _wait_status(health_port, "/ready", 200, 60)
    status, body = _get(health_port, "/ready")
    assert status == 200 and body == {"ready": True, "checks": {"agent_svid": "ok", "sync": "ok", "svids": "ok"}}
    assert _get(health_port, "/nope")[0] == 404
    for raw in (b"NONSENSE\r\n\r\n", b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n"):
        assert _raw(health_port, raw).startswith(b"HTTP/1.1 400 Bad Request\r\n")  # malformed, oversized

    first_agent_svid = _agent_not_after(e)
    asyncio.run(_first_svid(e))
    # a renewal at half-life restarts the sync stream on purpose: no warning for it
    wait_for(lambda: _agent_not_after(e) != first_agent_svid, 30, "agent svid renewal")
    wait_for(lambda: "sync stream restarted" in e.dump(), 10, "the planned sync restart logged at debug")

    asyncio.run(_server_stopped_then_expiry(e, health_port, metrics_port))

    records = [json.loads(line) for p in e.logs if p.name.startswith("agent") and p.exists()
               for line in p.read_text().splitlines() if line.startswith("{")]
    assert records, e.dump()
    assert all({"time", "level", "logger", "msg"} <= r.keys() for r in records)
    assert not any(r["logger"].startswith(("hpack", "h2")) for r in records)  # debug, and no header flood
    restarts = [r for r in records if "sync stream restarted" in r["msg"]]
    assert restarts and all(r["level"] == "debug" for r in restarts)
    before_stop = records[: next(i for i, r in enumerate(records) if "expired" in r["msg"] or
                                 "unreachable" in r["msg"] or "failed" in r["msg"])]
    assert not [r for r in before_stop if r["level"] == "warning"], before_stop


def _wait_status(port: int, path: str, want: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _get(port, path)[0] == want:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


async def _grpc_health(e: Env, service: str) -> int:
    channel = Channel(path=str(e.socket_path))
    try:
        return int((await HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=5)).status)
    finally:
        channel.close()


async def _first_svid(e: Env) -> None:
    async with x509_stream(e.socket_path) as stream:
        msg = await asyncio.wait_for(stream.recv_message(), 30)
        assert msg is not None and msg.svids[0].spiffe_id == f"spiffe://{TD}/h"


@contextlib.asynccontextmanager
async def _open_stream(e: Env) -> AsyncIterator[Stream[workload_pb2.X509SVIDRequest, workload_pb2.X509SVIDResponse]]:
    """A FetchX509SVID stream that the agent is expected to end (no cancel on the way out)."""
    channel = Channel(path=str(e.socket_path))
    try:
        async with SpiffeWorkloadAPIStub(channel).FetchX509SVID.open(metadata=HEADER) as stream:
            await stream.send_message(workload_pb2.X509SVIDRequest(), end=True)
            yield stream
    finally:
        channel.close()


async def _server_stopped_then_expiry(e: Env, health_port: int, metrics_port: int) -> None:
    async with _open_stream(e) as stream:
        assert await asyncio.wait_for(stream.recv_message(), 30) is not None
        e.stop(e.server)  # from now on nothing is renewed
        await asyncio.sleep(0.5)  # a rotation already in flight reaches the cache
        agent_expiry = _gauge(metrics_port, "spiffe_agent_svid_expiry_timestamp_seconds")
        svid_expiry = _gauge(metrics_port, "spiffe_agent_cached_svid_earliest_expiry_timestamp_seconds")
        assert agent_expiry == _agent_not_after(e)
        assert svid_expiry is not None and _gauge(metrics_port, "spiffe_agent_ready") == 1.0
        expiry = min(agent_expiry, svid_expiry)
        assert expiry > time.time() + 1, "the SVIDs must outlive the setup for the check to mean anything"

        turned_false = None
        while time.time() < expiry + 3:
            status, body = await asyncio.to_thread(_get, health_port, "/ready")
            if status == 503:
                turned_false = time.time()
                break
            await asyncio.sleep(0.05)
        assert turned_false is not None, "ready never turned false"
        print(f"/ready false {turned_false - expiry:+.3f}s after the first expiry")
        assert expiry - 0.05 <= turned_false <= expiry + 1.0
        assert body["ready"] is False and "expired" in json.dumps(body["checks"])
        assert _gauge(metrics_port, "spiffe_agent_ready") == 0.0
        # gRPC health on the Workload API socket agrees (its answer is reused for up to 0.25 s)
        await asyncio.sleep(0.3)
        for service in ("", "SpiffeWorkloadAPI"):
            assert await _grpc_health(e, service) == HealthCheckResponse.NOT_SERVING

        # the open stream ends when its SVID expires; it never delivers the expired one again
        with pytest.raises(GRPCError) as open_err:
            while True:  # a rotation sent just before the server stopped may still be queued
                msg = await asyncio.wait_for(stream.recv_message(), max(5.0, svid_expiry - time.time() + 5))
                if msg is None:  # the stream ended: its status comes with the trailers
                    await stream.recv_trailing_metadata()
                    raise AssertionError("the stream ended with OK")
                leaf = _pem.certificates_from_der(msg.svids[0].x509_svid)[0]
                assert leaf.not_valid_after_utc.timestamp() > time.time(), "an expired SVID was served"
        assert open_err.value.status is Status.UNAVAILABLE and "expired" in str(open_err.value.message)

    with pytest.raises(GRPCError) as new_err:
        async with _open_stream(e) as fresh:
            await asyncio.wait_for(fresh.recv_message(), 10)
    assert new_err.value.status is Status.UNAVAILABLE
    assert f"spiffe://{TD}/h expired at" in str(new_err.value.message)
    assert _get(health_port, "/live")[0] == 200  # alive, only not ready
