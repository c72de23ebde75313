"""The CLI's admin API client: unary gRPC calls over the admin Unix socket, synchronous, on ``h2`` alone.

A CLI run makes one call or a few; importing asyncio and grpclib cost more than the call itself,
so the CLI speaks the small part of gRPC it needs directly: one HTTP/2 connection, unary calls
(every admin RPC is unary), uncompressed messages, ``grpc-status``/``grpc-message`` trailers::

    with Channel("/var/lib/spiffe-server/api.sock", timeout=30) as channel:
        entry = channel.unary("GetEntry", admin_pb2.GetEntryRequest(id="..."))

Everything read from the socket is bounded (:data:`MAX_RESPONSE_BYTES` per call) before it is
buffered. A peer that is not a gRPC server raises :class:`NotGrpcError`; a gRPC error status
raises :class:`RpcError` with the status name and the server's message.
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2

SERVICE = "spiffepy.server.v1.AdminAPI"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # one reply: a page of 1000 entries is far below this
_READ = 65536

# https://grpc.github.io/grpc/core/md_doc_statuscodes.html
STATUS_NAMES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")


class RpcError(Exception):
    """The server answered with a gRPC error status."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotGrpcError(Exception):
    """The peer does not answer gRPC; str() says what it did instead."""


def _response_type(method: str) -> Any:
    """The reply message class of an admin RPC, from the service descriptor."""
    service = admin_pb2.DESCRIPTOR.services_by_name["AdminAPI"]
    desc = service.methods_by_name.get(method)
    if desc is None:
        raise AttributeError(f"the admin API has no method {method!r}")
    name = desc.output_type.name
    return getattr(admin_pb2, name, None) or getattr(types_pb2, name)


class Channel:
    """One HTTP/2 connection to the admin socket; calls are made one after the other."""

    def __init__(self, path: str, *, timeout: float) -> None:
        self._path = path
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._conn: h2.connection.H2Connection | None = None
        self._spoke_h2 = False  # the peer has sent HTTP/2 frames: a later broken pipe is not "not gRPC"

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connected(self) -> tuple[socket.socket, h2.connection.H2Connection]:
        if self._sock is None or self._conn is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self._path)
            except BaseException:
                sock.close()
                raise
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            self._sock, self._conn = sock, conn
        return self._sock, self._conn

    def unary(self, method: str, request: Any) -> Any:
        """Call ``/spiffepy.server.v1.AdminAPI/<method>`` with ``request``; the reply message."""
        try:
            return self._unary(method, request)
        except (BrokenPipeError, ConnectionResetError):
            if self._spoke_h2:
                raise
            raise NotGrpcError("it hung up on the HTTP/2 preface") from None

    def _unary(self, method: str, request: Any) -> Any:
        reply_type = _response_type(method)
        sock, conn = self._connected()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "http"), (":path", f"/{SERVICE}/{method}"), (":authority", "localhost"),
            ("content-type", "application/grpc+proto"), ("te", "trailers"),
            ("grpc-timeout", f"{max(1, int(self._timeout))}S")])
        body = request.SerializeToString()
        self._send(sock, conn, stream_id, b"\0" + len(body).to_bytes(4, "big") + body)
        headers, data, trailers = self._receive(sock, conn, stream_id)
        fields = {**headers, **trailers}
        status = fields.get("grpc-status")
        if status is None:
            code = headers.get(":status", "none")
            if code != "200" or not headers.get("content-type", "").startswith("application/grpc"):
                raise NotGrpcError(f"it answered HTTP status {code}, content-type {headers.get('content-type')!r}")
            raise NotGrpcError("its reply has no grpc-status")
        if status != "0":
            name = STATUS_NAMES[int(status)] if status.isdigit() and int(status) < len(STATUS_NAMES) else "UNKNOWN"
            raise RpcError(name, unquote(fields.get("grpc-message", "")))
        if len(data) < 5 or data[0] != 0 or int.from_bytes(data[1:5], "big") != len(data) - 5:
            raise NotGrpcError("its reply is not one uncompressed gRPC message")
        return reply_type.FromString(bytes(data[5:]))

    def _send(self, sock: socket.socket, conn: h2.connection.H2Connection, stream_id: int, payload: bytes) -> None:
        """Send ``payload`` and end the stream, waiting for window updates when flow control says so."""
        while True:
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size, len(payload))
            if room or not payload:
                conn.send_data(stream_id, payload[:room], end_stream=room == len(payload))
                sock.sendall(conn.data_to_send())
                payload = payload[room:]
                if not payload:
                    return
                continue
            self._events(sock, conn)  # the window is closed: read until the server opens it

    def _events(self, sock: socket.socket, conn: h2.connection.H2Connection) -> list[h2.events.Event]:
        chunk = sock.recv(_READ)
        if not chunk:
            raise NotGrpcError("it closed the connection without a reply")
        try:
            events = conn.receive_data(chunk)
        except h2.exceptions.ProtocolError as err:
            raise NotGrpcError(f"it does not speak HTTP/2: {type(err).__name__}") from None
        self._spoke_h2 = True
        pending = conn.data_to_send()
        if pending:
            sock.sendall(pending)
        return events

    def _receive(self, sock: socket.socket, conn: h2.connection.H2Connection, stream_id: int
                 ) -> tuple[dict[str, str], bytearray, dict[str, str]]:
        headers: dict[str, str] = {}
        trailers: dict[str, str] = {}
        data = bytearray()
        while True:
            for event in self._events(sock, conn):
                if getattr(event, "stream_id", stream_id) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    headers = {str(k): str(v) for k, v in event.headers or ()}
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = {str(k): str(v) for k, v in event.headers or ()}
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data or b""
                    if len(data) > MAX_RESPONSE_BYTES:
                        raise NotGrpcError(f"its reply is larger than {MAX_RESPONSE_BYTES} bytes")
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                    sock.sendall(conn.data_to_send())
                elif isinstance(event, h2.events.StreamEnded):
                    return headers, data, trailers
                elif isinstance(event, h2.events.StreamReset):
                    raise RpcError("UNAVAILABLE", f"the server reset the call (HTTP/2 error {event.error_code})")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise RpcError("UNAVAILABLE", f"the server closed the connection (HTTP/2 error {event.error_code})")
