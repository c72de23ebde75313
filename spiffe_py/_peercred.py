"""Caller credentials of a Unix-socket gRPC peer (SO_PEERCRED).

This is the ONE place that reaches into grpclib privates (``Peer._transport``);
``tests/unit/agent/test_peercred.py`` pins it against the installed grpclib::

    cred = peer_cred(stream)          # inside a grpclib handler
    print(cred.pid, cred.uid, cred.gid)
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from spiffe_py.errors import SpiffeError

_UCRED = struct.Struct("3i")  # struct ucred { pid_t pid; uid_t uid; gid_t gid; }


class PeerCredError(SpiffeError):
    """The caller's credentials could not be read from its connection."""


@dataclass(frozen=True, slots=True)
class PeerCred:
    """Kernel-reported process, user and group of a Unix-socket peer."""

    pid: int
    uid: int
    gid: int


def peer_cred_from_socket(sock: Any) -> PeerCred:
    """Read SO_PEERCRED from a connected AF_UNIX socket (or asyncio TransportSocket)."""
    if getattr(sock, "family", None) != socket.AF_UNIX:
        raise PeerCredError("peercred: peer is not connected over a unix socket")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    if pid <= 0:
        # pid 0 means the peer lives in another pid namespace we cannot see
        raise PeerCredError(f"peercred: kernel reported no usable pid: {pid!r}")
    return PeerCred(pid=pid, uid=uid, gid=gid)


def peer_cred(stream: Any) -> PeerCred:
    """Return the credentials of the process on the other end of a grpclib server stream."""
    transport = getattr(stream.peer, "_transport", None)
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None:
        raise PeerCredError("peercred: stream has no underlying socket")
    return peer_cred_from_socket(sock)
