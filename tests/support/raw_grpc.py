"""A raw HTTP/2 gRPC client (``h2`` over a plain socket) that can announce any message length.

Real gRPC clients refuse to send a message larger than their own limit; this one writes the
5-byte length prefix it is told to and then streams as many body bytes as the server's flow
control lets through, to show what a hostile peer can make a server buffer::

    sock = tls_connect(("127.0.0.1", port))                       # or unix_connect(path)
    result = announce_oversized(sock, "/pkg.Service/Method", announced=600 << 20, body_bytes=64 << 20)
    assert result.status == "8"                                    # RESOURCE_EXHAUSTED
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions

STREAM_ID = 1
CHUNK = 16 * 1024


@dataclass
class RawResult:
    """What the server answered, and how much of the body it let us send."""

    sent: int = 0  # body bytes sent after the prefix
    status: str | None = None  # grpc-status
    message: str | None = None  # grpc-message
    reset: bool = False  # RST_STREAM received
    goaway: bool = False  # GOAWAY received
    closed: bool = False  # the server closed the connection


def tls_connect(address: tuple[str, int]) -> socket.socket:
    """A TLS connection without a client certificate (an unauthenticated peer), ALPN h2."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(address, timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def unix_connect(path: str) -> socket.socket:
    """A connection to a Unix-socket gRPC server."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def _recv(sock: socket.socket, timeout: float) -> bytes | None:
    """Bytes from the socket; None if nothing came within ``timeout``; b"" when it was closed."""
    sock.settimeout(timeout)
    try:
        return sock.recv(65536)
    except (TimeoutError, ssl.SSLWantReadError, BlockingIOError):
        return None
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return b""


def _handle(conn: h2.connection.H2Connection, data: bytes, result: RawResult) -> None:
    if not data:
        result.closed = True
        return
    try:
        events = conn.receive_data(data)
    except h2.exceptions.ProtocolError:
        result.closed = True
        return
    for event in events:
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            headers = {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
                       for k, v in event.headers or ()}
            result.status = headers.get("grpc-status", result.status)
            result.message = headers.get("grpc-message", result.message)
        elif isinstance(event, h2.events.StreamReset):
            result.reset = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            result.goaway = True


def _flush(sock: socket.socket, conn: h2.connection.H2Connection, result: RawResult) -> None:
    out = conn.data_to_send()
    if out:
        sock.settimeout(10.0)  # _recv polls with short timeouts; a send may wait for the peer to read
        try:
            sock.sendall(out)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            result.closed = True


def announce_oversized(sock: socket.socket, path: str, *, announced: int, body_bytes: int,
                       metadata: Sequence[tuple[str, str]] = (), wait_s: float = 10.0,
                       on_sent: Callable[[], None] | None = None) -> RawResult:
    """Open one call on ``path``, announce a message of ``announced`` bytes and stream up to ``body_bytes``.

    Sends only while the server's flow-control window allows, stops when the stream or the
    connection ends, then waits up to ``wait_s`` for the status. ``on_sent`` runs once sending
    stopped, while the connection is still open (to measure the server then).
    """
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(STREAM_ID, [(":method", "POST"), (":scheme", "http"), (":path", path),
                                  (":authority", "localhost"), ("content-type", "application/grpc"),
                                  ("te", "trailers"), *metadata])
    conn.send_data(STREAM_ID, b"\x00" + struct.pack(">I", announced))
    result = RawResult()
    _flush(sock, conn, result)
    zeros = bytes(CHUNK)
    while result.sent < body_bytes and not (result.closed or result.reset or result.status):
        window = min(conn.local_flow_control_window(STREAM_ID), conn.max_outbound_frame_size, CHUNK)
        if window <= 0:
            data = _recv(sock, 5.0)
            if data is None:
                break  # the server stopped opening its window: it is not reading any more
            _handle(conn, data, result)
            continue
        size = min(window, body_bytes - result.sent)
        try:
            conn.send_data(STREAM_ID, zeros[:size])
        except h2.exceptions.StreamClosedError:
            break
        _flush(sock, conn, result)
        result.sent += size
        data = _recv(sock, 0.0001) if result.sent % (1 << 20) < size else None  # poll about once per MiB
        if data is not None:
            _handle(conn, data, result)
    if on_sent is not None:
        on_sent()
    deadline = time.monotonic() + wait_s
    while result.status is None and not result.closed and time.monotonic() < deadline:
        data = _recv(sock, 0.5)
        if data is not None:
            _handle(conn, data, result)
            _flush(sock, conn, result)
    return result


def wait_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the server closes the connection within ``timeout`` (reading and dropping what it sends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = _recv(sock, 0.5)
        if data == b"":
            return True
    return False
