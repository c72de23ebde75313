"""Liveness/readiness: sub-checks shared by the admin ``Health`` RPC and the optional HTTP listener.

::

    checks = await run_checks(ctx)          # {"datastore": "ok", "ca": "ok"}
    server = await start_health_listener(ctx, cfg.health)
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from spiffe_server.config import HealthConfig

if TYPE_CHECKING:
    from spiffe_server.api.context import ServerContext

log = logging.getLogger("spiffe_server.health")

_MAX_REQUEST_LINE = 2048
_READ_TIMEOUT = 5.0


async def run_checks(ctx: ServerContext) -> dict[str, str]:
    """Each sub-check's result: ``"ok"`` or a short failure reason (never a secret)."""
    checks: dict[str, str] = {}
    try:
        await ctx.call(ctx.store.count_entries)
        checks["datastore"] = "ok"
    except Exception as err:  # a health probe reports failures, it never raises
        checks["datastore"] = f"unavailable: {err.__class__.__name__}"
    try:
        ctx.ca.active_x509_ca()
        ctx.ca.active_jwt_key()
        checks["ca"] = "ok"
    except Exception as err:
        checks["ca"] = f"unavailable: {err}"
    return checks


async def _handle(ctx: ServerContext, cfg: HealthConfig, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        line = await asyncio.wait_for(reader.readline(), _READ_TIMEOUT)
        parts = line[:_MAX_REQUEST_LINE].decode("latin-1").split()
        path = parts[1] if len(parts) >= 2 else ""
        body: dict[str, object]
        if path == cfg.live_path:
            status, body = 200, {"live": True}
        elif path == cfg.ready_path:
            checks = await run_checks(ctx)
            ready = all(v == "ok" for v in checks.values())
            status, body = (200 if ready else 503), {"ready": ready, "checks": checks}
        else:
            status, body = 404, {"error": "not found"}
        data = json.dumps(body).encode()
        reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
        await writer.drain()
    except (TimeoutError, ConnectionError, UnicodeDecodeError):
        pass
    finally:
        writer.close()


async def start_health_listener(ctx: ServerContext, cfg: HealthConfig) -> asyncio.Server:
    """Serve ``live_path`` and ``ready_path`` over plain HTTP."""
    server = await asyncio.start_server(lambda r, w: _handle(ctx, cfg, r, w), cfg.bind_address, cfg.bind_port)
    log.info("health listener started", extra={"address": f"{cfg.bind_address}:{cfg.bind_port}"})
    return server
