"""A small HTTPS listener for fixed documents: the OIDC discovery provider and the bundle endpoint.

Both face the internet and serve a few GET-only documents, so both use this one bounded reader
and writer: the request head is capped (bytes, line, header count) and timed, bodies are
refused, one request per connection, a cap on open connections. TLS comes from a certificate
and key in files, re-read when they change (or, for plain HTTP, none)::

    listener = HttpListener("oidc", ("127.0.0.1", 8444), answer, cert=ServingCertificate(cert, key, label="oidc"))
    await listener.start()      # answer(method, target) -> Response, for every well-formed request
    ...
    await listener.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("spiffe_server.http")

MAX_HEAD_BYTES = 16 * 1024  # request line + headers; more gets 431 and nothing more is buffered
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADERS = 64
HEAD_TIMEOUT = 10.0  # seconds to send the whole request head (slowloris)
HANDSHAKE_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 256
FILE_POLL_SECONDS = 1.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
            414: "URI Too Long", 431: "Request Header Fields Too Large", 505: "HTTP Version Not Supported"}


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP response; ``body`` is sent for GET and only counted for HEAD."""

    status: int
    content_type: str
    body: bytes
    cache_control: str = "no-store"
    extra_headers: tuple[tuple[str, str], ...] = ()


class HttpError(Exception):
    """A request the provider refuses, with the status it gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", f"{message}\n".encode())


def parse_head(head: bytes) -> tuple[str, str]:
    """Method and target (path and query) of a request head (without the final blank line); HttpError if malformed."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "request head must be ASCII") from None
    lines = text.split("\r\n")
    request_line, headers = lines[0], [line for line in lines[1:] if line]
    if len(request_line) > MAX_REQUEST_LINE:
        raise HttpError(414, "request line too long")
    if len(headers) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha():
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    if not target.startswith("/"):
        raise HttpError(400, "request target must be a path")
    for line in headers:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t\"(),/;<=>?@[\\]{}"):
            raise HttpError(400, "malformed header field")
        lowered, value = name.lower(), value.strip()
        if lowered == "transfer-encoding" or (lowered == "content-length" and value != "0"):
            raise HttpError(400, "requests with a body are not accepted")
    return method, target


def encode(response: Response, *, head_only: bool) -> bytes:
    """The response on the wire; one request per connection."""
    lines = [f"HTTP/1.1 {response.status} {_REASONS[response.status]}",
             f"Content-Type: {response.content_type}",
             f"Content-Length: {len(response.body)}",
             f"Cache-Control: {response.cache_control}",
             "X-Content-Type-Options: nosniff",
             *(f"{name}: {value}" for name, value in response.extra_headers),
             "Connection: close"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    return head if head_only else head + response.body


# -- TLS from files, reloaded -------------------------------------------------------------------


def _file_signature(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        st = os.stat(path)
        out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def _tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)  # raises on a missing file or a key that does not match
    return ctx


class ServingCertificate:
    """The listener's TLS context; each handshake picks up the newest good certificate and key.

    The listener's context is fixed when it starts, so its SNI callback (called for every
    ClientHello, with or without SNI) hands each connection the context last loaded from the
    files. A half-written or mismatched pair is refused and the previous one kept.
    """

    def __init__(self, cert_file: Path, key_file: Path, *, label: str) -> None:
        self._label = label  # which listener, for the logs
        self._files = (cert_file, key_file)
        self._signature = _file_signature(cert_file, key_file)
        self._current = _tls_context(cert_file, key_file)
        self.listener = _tls_context(cert_file, key_file)
        self.listener.sni_callback = self._pick

    def _pick(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        if conn.context is not self._current:
            conn.context = self._current

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; True if the new pair is now served."""
        try:
            signature = _file_signature(*self._files)
            if signature == self._signature:
                return False
            fresh = _tls_context(*self._files)
        except (OSError, ssl.SSLError) as err:
            log.warning("%s: serving certificate not reloaded, keeping the previous one: %s",
                        self._label, err.__class__.__name__)
            return False
        self._current, self._signature = fresh, signature
        log.info("%s: serving certificate reloaded", self._label, extra={"cert_file": str(self._files[0])})
        return True


# -- the listener -------------------------------------------------------------------------------

Answer = Callable[[str, str], Awaitable[Response]]
"""``answer(method, target)``: the response to one well-formed request."""


class HttpListener:
    """One listener: HTTPS with ``cert``, plain HTTP without (the caller decides when that is allowed)."""

    def __init__(self, label: str, address: tuple[str, int], answer: Answer, *,
                 cert: ServingCertificate | None) -> None:
        self._label = label  # which listener, for the logs
        self._address = address
        self._answer = answer
        self._cert = cert
        self._open = 0
        self._server: asyncio.Server | None = None
        self._poll: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with ``bind_port = 0``)."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        """Start listening, and watch the certificate files."""
        ssl_ctx = None if self._cert is None else self._cert.listener
        self._server = await asyncio.start_server(
            self._handle, self._address[0], self._address[1], limit=MAX_HEAD_BYTES, ssl=ssl_ctx,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT if ssl_ctx is not None else None)
        if self._cert is not None:
            self._poll = asyncio.create_task(self._watch_files(self._cert))

    async def close(self) -> None:
        """Stop accepting and stop watching the files."""
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    @staticmethod
    async def _watch_files(cert: ServingCertificate) -> None:
        while True:
            await asyncio.sleep(FILE_POLL_SECONDS)
            cert.reload_if_changed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._open >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open += 1
        try:
            response, head_only = await self._read_and_answer(reader)
            if response is not None:
                writer.write(encode(response, head_only=head_only))
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, ConnectionError, ssl.SSLError):
            pass
        except Exception:  # a listener logs and closes; it must not die on one request
            log.exception("%s: request failed", self._label)
        finally:
            self._open -= 1
            writer.close()

    async def _read_and_answer(self, reader: asyncio.StreamReader) -> tuple[Response | None, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except asyncio.LimitOverrunError:
            return error_response(431, "request head too large"), False
        except asyncio.IncompleteReadError:
            return None, False  # the client went away mid-request
        except TimeoutError:
            return error_response(408, "request head not received in time"), False
        try:
            method, target = parse_head(head[:-4])
        except HttpError as err:
            return error_response(err.status, str(err)), False
        return await self._answer(method, target), method == "HEAD"
