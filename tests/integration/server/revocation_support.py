"""Helpers for the revocation integration tests: a server with the bundle endpoint, agents, SVIDs, sync streams.

::

    with revocation_server() as srv:
        agent = attest_join_token(srv, token(srv))
        async with agent_channel(srv, agent) as stub, sync_stream(stub) as (stream, full):
            leaf = await new_x509(stub, entry_id, spiffe_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from h2.exceptions import StreamClosedError

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from tests.integration.server.agent_client import csr_for
from tests.support.server_proc import ServerProc, free_port

TD = "spiffe://example.org"
WAIT_S = 20.0


@contextlib.contextmanager
def revocation_server() -> Iterator[ServerProc]:
    """A server for example.org with the bundle/CRL endpoint on a free port (``srv.bundle_port``)."""
    port = free_port()
    config = f'[federation.bundle_endpoint]\ninsecure_http = true\nbind_port = {port}\n'
    with ServerProc.start(config_text=config) as srv:
        srv.bundle_port = port  # type: ignore[attr-defined]
        yield srv


def http_get(srv: ServerProc, path: str) -> bytes:
    """GET from the server's bundle endpoint."""
    port = srv.bundle_port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        data: bytes = resp.read()
        return data


def token(srv: ServerProc) -> str:
    """A fresh join token."""
    return str(srv.cli_json("token", "generate")["value"])


def entry(srv: ServerProc, spiffe_id: str, parent: str, *extra: str) -> str:
    """Create an entry with selector unix:uid:1000; returns its ID."""
    return str(srv.cli_json("entry", "create", "--spiffe-id", spiffe_id, "--parent-id", parent,
                            "--selector", "unix:uid:1000", *extra)["id"])


async def new_x509(stub: AgentAPIStub, entry_id: str, spiffe_id: str) -> x509.Certificate:
    """Sign one X.509-SVID for the entry via BatchNewX509SVID; returns the leaf."""
    key = ec.generate_private_key(ec.SECP256R1())
    resp = await stub.BatchNewX509SVID(agent_pb2.BatchNewX509SVIDRequest(
        params=[agent_pb2.NewX509SVIDParams(entry_id=entry_id, csr=csr_for(key, spiffe_id))]))
    (result,) = resp.results
    assert result.status_code == 0, result.status_message
    return x509.load_der_x509_certificate(result.cert_chain[0])


async def new_jwt(stub: AgentAPIStub, entry_id: str, audience: str = "db") -> agent_pb2.NewJWTSVIDResponse:
    """Mint a JWT-SVID for the entry via NewJWTSVID."""
    resp: agent_pb2.NewJWTSVIDResponse = await stub.NewJWTSVID(
        agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=[audience]))
    return resp


def serial_of(cert: x509.Certificate) -> str:
    """Lowercase hex serial (the server's canonical form)."""
    return f"{cert.serial_number:x}"


@contextlib.asynccontextmanager
async def sync_stream(stub: AgentAPIStub) -> AsyncIterator[tuple[Any, agent_pb2.SyncAuthorizedResponse]]:
    """An open SyncAuthorized stream and its first (full) message."""
    async with stub.SyncAuthorized.open() as stream:
        await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
        first = await asyncio.wait_for(stream.recv_message(), WAIT_S)
        assert first is not None and first.full
        try:
            yield stream, first
        finally:
            with contextlib.suppress(StreamClosedError):  # unless the server ended it (eviction)
                await stream.cancel()  # the server never ends a healthy stream: don't wait for its trailers


async def next_matching(stream: Any, pred: Callable[[agent_pb2.SyncAuthorizedResponse], bool],
                        ) -> agent_pb2.SyncAuthorizedResponse:
    """The next pushed message that satisfies ``pred`` (AssertionError if the stream ends)."""
    async def scan() -> agent_pb2.SyncAuthorizedResponse:
        while True:
            msg = await stream.recv_message()
            assert msg is not None, "sync stream ended"
            if pred(msg):
                found: agent_pb2.SyncAuthorizedResponse = msg
                return found
    return await asyncio.wait_for(scan(), WAIT_S)


def revoked_values(msg: agent_pb2.SyncAuthorizedResponse) -> set[tuple[str, str]]:
    """(kind, value) of the revocations a message carries."""
    return {(r.kind, r.value) for r in msg.revocations}


async def timed_cli(srv: ServerProc, *args: str) -> float:
    """Run a CLI command off the loop; returns when it started (monotonic), for latency reports."""
    started = time.monotonic()
    await asyncio.to_thread(srv.cli, *args)
    return started
