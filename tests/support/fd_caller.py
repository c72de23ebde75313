"""A Workload API client that hands its connection on across an exec, for caller-identity tests.

``connect PATH PROGRAM ARGS...``: connect to the agent socket at PATH, print ``connected`` and wait
for a line on stdin, then ``execv(PROGRAM, [PROGRAM, *ARGS, FD])``: the connected socket stays
open across the exec as fd FD. ``call FD``: speak gRPC over the inherited fd (FetchJWTSVID) and
print ``{"status": ..., "message": ..., "spiffe_ids": [...]}``. ``FD_CALLER_PATH`` (os.pathsep
separated) is prepended to sys.path first, so a copied or setgid interpreter finds grpclib.
"""

from __future__ import annotations

import os
import socket
import sys

sys.path[1:1] = [p for p in os.environ.get("FD_CALLER_PATH", "").split(os.pathsep) if p]


def connect(path: str, argv: list[str]) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    fd = sock.detach()
    os.set_inheritable(fd, True)
    print("connected", flush=True)
    sys.stdin.readline()
    os.execv(argv[0], [*argv, str(fd)])


async def _call(fd: int) -> dict[str, object]:
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError

    from spiffe_py._proto import workload_pb2
    from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIStub

    class FdChannel(Channel):  # type: ignore[misc]
        async def _create_connection(self) -> object:
            sock = socket.socket(fileno=fd)
            _, protocol = await self._loop.create_unix_connection(self._protocol_factory, sock=sock)
            return protocol

    channel = FdChannel(path="unused")
    try:
        reply = await SpiffeWorkloadAPIStub(channel).FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["test"]), metadata={"workload.spiffe.io": "true"}, timeout=10)
    except GRPCError as err:
        return {"status": err.status.name, "message": err.message, "spiffe_ids": []}
    finally:
        channel.close()
    return {"status": "OK", "message": "", "spiffe_ids": [s.spiffe_id for s in reply.svids]}


def main() -> None:
    import asyncio
    import json

    if sys.argv[1] == "connect":
        connect(sys.argv[2], sys.argv[3:])
    else:
        print(json.dumps(asyncio.run(_call(int(sys.argv[2])))), flush=True)


if __name__ == "__main__":
    main()
