"""gRPC services of spiffe-server (the only server package that imports grpclib)."""

from __future__ import annotations

__all__: list[str] = []
