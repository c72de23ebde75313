"""HTTP liveness and readiness of the agent, like the server's: ``/live`` and ``/ready``.

::

    server = await start_health_listener(manager.health, cfg.health_listener())
    # GET /ready -> 200 {"ready": true, "checks": {"agent_svid": "ok", "sync": "ok", "svids": "ok"}}

``/live`` answers 200 while the process serves. ``/ready`` answers 503 unless the agent holds an
unexpired SVID of its own, has synced with the server, and no cached workload SVID has expired;
each check says why it failed. The checks are computed per request from the agent's clock, so
``/ready`` turns false the moment an SVID expires. One request per connection; the request line
is capped and must arrive within a few seconds; nothing secret is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from spiffe_agent.config import HealthListener
from spiffe_agent.manager.manager import AgentHealth

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 2048
MAX_HEADER_BYTES = 16 * 1024
READ_TIMEOUT = 5.0
MAX_CONNECTIONS = 64
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def respond(method: str, path: str, cfg: HealthListener,
            health: Callable[[], AgentHealth]) -> tuple[int, dict[str, object]]:
    """The status and JSON body for one request (pure but for ``health()``)."""
    if path not in (cfg.live_path, cfg.ready_path):
        return 404, {"error": "not found"}
    if method not in ("GET", "HEAD"):
        return 405, {"error": "only GET and HEAD are allowed"}
    if path == cfg.live_path:
        return 200, {"live": True}
    state = health()
    return (200 if state.ready else 503), {"ready": state.ready, "checks": dict(state.checks)}


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """(method, path) of the request line; the headers are read (bounded) and dropped."""
    line = await reader.readuntil(b"\n")
    if len(line) > MAX_REQUEST_LINE:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    total = 0
    while True:
        header = await reader.readuntil(b"\n")
        total += len(header)
        if total > MAX_HEADER_BYTES:
            return None
        if header in (b"\r\n", b"\n"):
            return parts[0], parts[1].split("?", 1)[0]


class HealthServer:
    """The listener: at most MAX_CONNECTIONS at once; one request each."""

    def __init__(self, cfg: HealthListener, health: Callable[[], AgentHealth]) -> None:
        self._cfg = cfg
        self._health = health
        self._open = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen on ``bind_address:bind_port``."""
        self._server = await asyncio.start_server(self._handle, self._cfg.bind_address, self._cfg.bind_port,
                                                  limit=MAX_REQUEST_LINE)
        log.info("health listener on %s:%d (%s, %s)", self._cfg.bind_address, self._cfg.bind_port,
                 self._cfg.live_path, self._cfg.ready_path)

    def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            if self._open > MAX_CONNECTIONS:
                return
            try:
                head = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                head = None
            body: dict[str, object]
            if head is None:
                status, body = 400, {"error": "bad request"}
                method = "GET"
            else:
                method, path = head
                status, body = respond(method, path, self._cfg, self._health)
            data = json.dumps(body).encode()
            writer.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                         + (b"" if method == "HEAD" else data))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
