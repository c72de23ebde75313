"""A real spiffe-server signing in worker processes: admin RPCs are answered while a large sync
signs, a killed worker loses no batch, and a rotated CA signs the very next batch."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub
from tests.integration.server.agent_client import TestAgent, agent_channel, attest, csr_for, server_roots
from tests.support.server_proc import ServerProc

SID = "spiffe://example.org/pool/workload"
# Signed inline, a 500-CSR batch held the event loop for 0.7-1.5 s on the 2-core test box (an
# admin call waited behind it: p99 1.06-1.36 s). With the pool, admin p99 measured 57-133 ms with
# that box loaded ~4x. 500 ms separates "waits behind a whole batch" from "interleaves with it".
ADMIN_P99_BOUND_S = 0.5


async def _enrolled(srv: ServerProc) -> tuple[TestAgent, str]:
    token = str(srv.cli_json("token", "generate")["value"])
    agent = await attest(srv, "join_token", token.encode())
    entry = srv.cli_json("entry", "create", "--spiffe-id", SID, "--parent-id", agent.spiffe_id,
                         "--selector", "unix:uid:1000")
    return agent, str(entry["id"])


def _request(entry_id: str, count: int) -> agent_pb2.BatchNewX509SVIDRequest:
    return agent_pb2.BatchNewX509SVIDRequest(params=[
        agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(ec.generate_private_key(ec.SECP256R1()), SID))
        for _ in range(count)])


def _all_signed(response: agent_pb2.BatchNewX509SVIDResponse, count: int) -> list[x509.Certificate]:
    assert len(response.results) == count
    assert [r.status_code for r in response.results] == [Status.OK.value] * count, response.results[0]
    return [x509.load_der_x509_certificate(bytes(r.cert_chain[0])) for r in response.results]


def _workers(srv: ServerProc) -> list[int]:
    assert srv.proc is not None
    pid = srv.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"worker_entry" in Path(f"/proc/{c}/cmdline").read_bytes()]


async def test_admin_rpcs_answer_while_an_agent_signs_5000_csrs(server: ServerProc) -> None:
    agent, entry_id = await _enrolled(server)
    request = _request(entry_id, 500)  # 500 distinct CSRs, sent 10 times: 5,000 SVIDs
    channel = Channel(path=str(server.socket_path))
    admin = AdminAPIStub(channel)
    latencies: list[float] = []
    try:
        async with agent_channel(server, agent, server_roots(server)) as stub:
            _all_signed(await stub.BatchNewX509SVID(request), 500)  # warm: workers up, CA key sent
            done = asyncio.Event()

            async def admin_calls() -> None:
                while not done.is_set():
                    start = time.perf_counter()
                    await admin.ListEntries(admin_pb2.ListEntriesRequest(page_size=100))
                    latencies.append(time.perf_counter() - start)
                    await asyncio.sleep(0.01)

            caller = asyncio.create_task(admin_calls())
            for _ in range(10):
                _all_signed(await stub.BatchNewX509SVID(request), 500)
            done.set()
            await caller
    finally:
        channel.close()
    latencies.sort()
    p99 = latencies[max(0, int(len(latencies) * 0.99) - 1)]
    assert p99 < ADMIN_P99_BOUND_S, f"admin p99 {p99 * 1000:.0f} ms over {len(latencies)} calls while signing"


async def test_a_killed_signing_worker_loses_no_batch(server: ServerProc) -> None:
    agent, entry_id = await _enrolled(server)
    request = _request(entry_id, 200)
    async with agent_channel(server, agent, server_roots(server)) as stub:
        _all_signed(await stub.BatchNewX509SVID(request), 200)
        workers = _workers(server)
        assert workers, "the server runs no signing workers"
        # Killed between batches: the next batch is signed by a replacement.
        os.kill(workers[0], signal.SIGKILL)
        _all_signed(await asyncio.wait_for(stub.BatchNewX509SVID(request), 120), 200)
        # Killed mid-batch: the batch is retried (all signed) or fails as a whole with UNAVAILABLE; it never hangs.
        call = asyncio.create_task(asyncio.wait_for(stub.BatchNewX509SVID(request), 120))
        await asyncio.sleep(0.05)
        for pid in _workers(server):
            os.kill(pid, signal.SIGKILL)
        try:
            _all_signed(await call, 200)
        except GRPCError as err:
            assert err.status is Status.UNAVAILABLE, err
        _all_signed(await asyncio.wait_for(stub.BatchNewX509SVID(request), 120), 200)
    assert "Traceback" not in server.log_text()


async def test_the_next_batch_after_a_rotation_is_signed_by_the_new_ca(server: ServerProc) -> None:
    agent, entry_id = await _enrolled(server)
    request = _request(entry_id, 100)
    async with agent_channel(server, agent, server_roots(server)) as stub:
        before = {leaf.issuer for leaf in _all_signed(await stub.BatchNewX509SVID(request), 100)}
        server.cli_json("localauthority", "x509", "prepare")
        server.cli_json("localauthority", "x509", "activate")
        leaves = _all_signed(await stub.BatchNewX509SVID(request), 100)
    authorities = server.cli_json("localauthority", "x509", "show")["authorities"]
    [active] = [str(a["authority_id"]).lower() for a in authorities if str(a["status"]).lower() == "active"]
    akis = {leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier.hex()
            for leaf in leaves}
    assert akis == {active}
    assert not before & {leaf.issuer for leaf in leaves}
