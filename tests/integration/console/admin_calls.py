"""Admin API calls over a test server's Unix socket, in-process (no CLI start-up per call)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.server_proc import ServerProc


def admin_call(server: ServerProc, method: str, request: Any) -> Any:
    """One admin API call over the server's Unix socket (as the CLI makes them)."""
    from grpclib.client import Channel

    from spiffe_py._proto.spiffepy.server.v1.admin_grpc import AdminAPIStub

    async def call() -> Any:
        channel = Channel(path=str(server.socket_path))
        try:
            return await getattr(AdminAPIStub(channel), method)(request)
        finally:
            channel.close()

    # a thread of its own: Playwright's sync API may own this thread's event loop
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, call()).result(timeout=30)
