"""Pins spiffe_py._peercred against the installed grpclib with a real Unix-socket round trip."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import grpclib
import pytest
from grpclib.client import Channel
from grpclib.server import Server, Stream

from spiffe_py._peercred import PeerCred, PeerCredError, peer_cred, peer_cred_from_socket
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIBase, SpiffeWorkloadAPIStub


class _Echo(SpiffeWorkloadAPIBase):
    seen: PeerCred | None = None

    async def FetchJWTSVID(self, stream: Stream[workload_pb2.JWTSVIDRequest, workload_pb2.JWTSVIDResponse]) -> None:
        await stream.recv_message()
        type(self).seen = peer_cred(stream)
        await stream.send_message(workload_pb2.JWTSVIDResponse())

    FetchX509SVID = FetchX509Bundles = FetchJWTBundles = ValidateJWTSVID = FetchWITSVID = FetchWITBundles = (
        FetchJWTSVID
    )


async def test_peer_cred_over_grpclib_unix_socket(tmp_path: Path) -> None:
    print("grpclib", grpclib.__version__)
    path = str(tmp_path / "s.sock")
    server = Server([_Echo()])
    await server.start(path=path)
    try:
        async with Channel(path=path) as channel:
            await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(workload_pb2.JWTSVIDRequest())
    finally:
        server.close()
        await server.wait_closed()
    assert _Echo.seen == PeerCred(pid=os.getpid(), uid=os.geteuid(), gid=os.getegid())


def test_peer_cred_rejects_tcp_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, pytest.raises(PeerCredError, match="not connected"):
        peer_cred_from_socket(s)


def test_peer_cred_from_socketpair() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_cred_from_socket(a).pid == os.getpid()
