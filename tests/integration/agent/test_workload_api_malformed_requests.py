"""Malformed Workload API calls against a real agent: each gets a precise status, and the agent keeps serving.

Found by the fuzzing suite and the load test (benchmarks/bench_load.py): an undecodable or a
missing request message used to end as UNKNOWN.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub
from tests.integration.agent.conftest import HEADER, Env

FETCH_JWT = "/SpiffeWorkloadAPI/FetchJWTSVID"


class _RawCodec(ProtoCodec):  # type: ignore[misc]
    """Sends ``bytes`` as they are (so a request can be undecodable); replies stay undecoded."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


async def _status(socket_path: Path, payload: bytes | None, path: str = FETCH_JWT) -> Status:
    """The status of a call to ``path`` carrying ``payload`` (None: the request stream ends with no message)."""
    channel = Channel(path=str(socket_path), codec=_RawCodec())
    try:
        # STREAM_UNARY on the client side only: grpclib's client refuses to end a unary request with no message
        async with channel.request(path, Cardinality.STREAM_UNARY, bytes, bytes, metadata=HEADER) as stream:
            if payload is None:
                await stream.send_request(end=True)
            else:
                await stream.send_message(payload, end=True)
            await stream.recv_message()
            await stream.recv_trailing_metadata()
        return Status.OK
    except GRPCError as err:
        return err.status
    finally:
        channel.close()


async def _still_serves(socket_path: Path) -> bool:
    channel = Channel(path=str(socket_path))
    try:
        reply = await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["after"]), metadata=HEADER)
        return len(reply.svids) == 1
    finally:
        channel.close()


def test_garbage_bytes_on_the_socket_leave_the_agent_serving(env: Env) -> None:
    async def run() -> bool:
        for size in (1, 24, 4096):
            reader, writer = await asyncio.open_unix_connection(str(env.socket_path))
            writer.write(b"\x16\x03\x01" + b"\xff" * size)  # a TLS hello, then junk: not HTTP/2
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 10)
            writer.close()
        return await _still_serves(env.socket_path)

    assert asyncio.run(run())


def test_undecodable_request_is_invalid_argument(env: Env) -> None:
    assert asyncio.run(_status(env.socket_path, b"\xff" * 64)) is Status.INVALID_ARGUMENT
    assert asyncio.run(_still_serves(env.socket_path))


def test_missing_request_message_is_invalid_argument(env: Env) -> None:
    assert asyncio.run(_status(env.socket_path, None)) is Status.INVALID_ARGUMENT
    assert asyncio.run(_still_serves(env.socket_path))


def test_unknown_method_is_unimplemented(env: Env) -> None:
    """grpclib's own answer to an unknown method has no content-type, so clients saw UNKNOWN."""
    request = workload_pb2.JWTSVIDRequest(audience=["x"]).SerializeToString()
    assert asyncio.run(_status(env.socket_path, request, "/SpiffeWorkloadAPI/NoSuchMethod")) is Status.UNIMPLEMENTED
    assert asyncio.run(_still_serves(env.socket_path))
