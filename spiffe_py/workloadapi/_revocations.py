"""Client of the agent's revocation watch (``spiffepy.agent.v1.RevocationWatch``, beside the Workload API).

A relying workload keeps the set of revoked X.509 serials and JWT ids current, as pushed by its
local agent, and refuses those callers at once instead of at expiry::

    async for state in watch_revocations("unix:///run/spiffe/agent.sock"):
        if f"{leaf.serial_number:x}" in state.x509_serials: ...

The stream reconnects with backoff on its own; each yielded :class:`RevocationState` is complete.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from spiffe_py._backoff import Backoff, RetryState
from spiffe_py._proto.spiffepy.agent.v1 import revocations_pb2 as pb
from spiffe_py.workloadapi._client import _endpoint

log = logging.getLogger(__name__)

METHOD = "/spiffepy.agent.v1.RevocationWatch/WatchRevocations"
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_MAX_VALUES = 1_000_000  # a client never holds more than this many revoked values
_SERIAL = re.compile(r"[0-9a-f]{1,64}")
_MAX_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class RevocationState:
    """Revoked X.509 serials (lowercase hex), JWT ids, and tainted authority / JWT key ids."""

    x509_serials: frozenset[str] = frozenset()
    jwt_ids: frozenset[str] = frozenset()
    tainted_x509_authorities: frozenset[str] = frozenset()
    tainted_jwt_keys: frozenset[str] = frozenset()

    def x509_revoked(self, serial: int, authority_key_id: str | None = None) -> bool:
        """True if the SVID with ``serial`` (issued under ``authority_key_id``, lowercase hex) is refused."""
        if f"{serial:x}" in self.x509_serials:
            return True
        return authority_key_id is not None and authority_key_id in self.tainted_x509_authorities

    def jwt_revoked(self, jti: str | None, kid: str | None = None) -> bool:
        """True if the JWT-SVID with ``jti`` (signed with ``kid``) is refused."""
        return (jti is not None and jti in self.jwt_ids) or (kid is not None and kid in self.tainted_jwt_keys)


def _values(raw: Iterable[str], valid: re.Pattern[str] | None) -> frozenset[str]:
    out = set()
    for value in raw:
        v = value.lower() if valid is not None else value
        if len(v) <= _MAX_ID_CHARS and (valid is None or valid.fullmatch(v)):
            out.add(v)
    return frozenset(out)


def apply_message(state: RevocationState, message: Any) -> RevocationState:
    """The state after one ``RevocationSet`` message (pure); malformed values are dropped."""
    serials = _values(message.x509_serials, _SERIAL)
    jtis = _values(message.jwt_ids, None)
    if not message.full:
        serials, jtis = state.x509_serials | serials, state.jwt_ids | jtis
    if len(serials) + len(jtis) > _MAX_VALUES:
        raise ValueError(f"revocation watch: more than {_MAX_VALUES} revoked values")
    return RevocationState(serials, jtis, _values(message.tainted_x509_authorities, re.compile(r"[0-9a-f:]{1,128}")),
                           _values(message.tainted_jwt_keys, None))


async def watch_revocations(address: str | None = None, *, backoff: Backoff | None = None,
                            on_disconnect: Callable[[], None] | None = None) -> AsyncIterator[RevocationState]:
    """The agent's revocation state, then again after every change; reconnects with backoff until cancelled.

    A state is yielded only once an update is complete (its last chunk has no ``more``), so a
    full set split over messages never shows as a shorter set in between. ``on_disconnect`` is
    called whenever the stream ends or fails: until the next state, revocations may be missed,
    so a relying party should fail closed meanwhile.
    """
    endpoint = _endpoint(address)
    retry = RetryState(backoff=backoff or Backoff(initial=0.1, maximum=2.0))
    state = RevocationState()
    while True:
        channel = grpc.aio.insecure_channel(endpoint.target,
                                            options=(("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),))
        try:
            call = channel.unary_stream(METHOD, request_serializer=pb.WatchRevocationsRequest.SerializeToString,
                                        response_deserializer=pb.RevocationSet.FromString)(pb.WatchRevocationsRequest())
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                state = apply_message(state, message)
                retry.on_update()
                if not message.more:
                    yield state
            delay = retry.on_end()
        except grpc.RpcError as err:
            code = err.code() if hasattr(err, "code") else None
            delay = retry.on_error(code.name if code is not None else "UNKNOWN") or 1.0
            log.warning("revocation watch failed, retrying in %.1fs: %s", delay, code)
        finally:
            await channel.close()
        if on_disconnect is not None:
            on_disconnect()
        await asyncio.sleep(delay)
