"""Services beside the Workload API on its socket: gRPC health and server reflection (WE-16, WE-17).

::

    services = with_health_and_reflection(handler, ready=lambda: manager.health().ready)
    server = CoalescingServer(services, ...)

Neither calls the caller attestor nor returns anything secret, so any local caller may use them.
Reflection describes our own protobuf files from a pool of their own: the generated Workload API
code lives in a private descriptor pool (its names are global and would clash with py-spiffe's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor_pool, struct_pb2
from grpclib.health.check import ServiceCheck
from grpclib.health.service import Health
from grpclib.health.v1 import health_pb2
from grpclib.reflection.service import ServerReflection
from grpclib.reflection.v1 import reflection_pb2

from spiffe_py._proto import workload_pb2
from spiffe_py._proto.spiffepy.agent.v1 import revocations_pb2

HEALTH_CHECK_TTL = 0.25  # seconds a health answer is reused (the check walks the SVID cache)


def reflection_pool() -> descriptor_pool.DescriptorPool:
    """The protobuf files reflection can describe: the Workload API, the revocation watch, health, reflection."""
    pool = descriptor_pool.DescriptorPool()
    for module in (struct_pb2, workload_pb2, revocations_pb2, health_pb2, reflection_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    return pool


def with_health_and_reflection(handler: Any, *extra: Any, ready: Callable[[], bool]) -> list[Any]:
    """``handler`` and ``extra`` services plus health (overall and per Workload API) and reflection.

    Health says SERVING exactly when ``ready()`` holds, as the HTTP ``/ready`` does: not before
    the agent has its identity, nor once its own or a cached SVID expired. A Check re-reads it at
    most every HEALTH_CHECK_TTL seconds.
    """
    async def check() -> bool:
        return ready()

    status = ServiceCheck(check, check_ttl=HEALTH_CHECK_TTL, check_timeout=1.0)
    services: list[Any] = ServerReflection.extend([handler, *extra, Health({handler: [status]})],
                                                  pool=reflection_pool())
    return services
