"""A protobuf codec that refuses oversized messages (grpclib itself has no size limit).

::

    Server(handlers, codec=BoundedProtoCodec())
"""

from __future__ import annotations

from typing import Any

from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class BoundedProtoCodec(ProtoCodec):  # type: ignore[misc]  # grpclib is untyped here
    """ProtoCodec that rejects messages larger than ``max_bytes`` with RESOURCE_EXHAUSTED."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._max = max_bytes

    def decode(self, data: bytes, message_type: Any) -> Any:
        """Decode ``data`` unless it is over the limit."""
        if len(data) > self._max:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, f"message larger than {self._max} bytes")
        return super().decode(data, message_type)
