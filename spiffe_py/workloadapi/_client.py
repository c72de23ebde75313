"""Workload API clients: sync (grpcio) and asyncio (grpc.aio).

Constructors only validate the address; the channel connects on the first call. Every call sends
``workload.spiffe.io: true`` (WE-04); every ``fetch_*`` makes exactly one RPC::

    client = WorkloadApiClient("unix:///tmp/agent.sock")
    ctx = client.fetch_x509_context()
    for update in client.watch_x509_context():   # full state each time (WA-05)
        ...

    async with AsyncWorkloadApiClient() as client:   # address from SPIFFE_ENDPOINT_SOCKET
        svid = await client.fetch_jwt_svid("my-audience")
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import grpc
import grpc.aio

from spiffe_py._proto import workload_pb2 as pb
from spiffe_py._proto import workload_pb2_grpc as pb_grpc
from spiffe_py.bundle import BundleSet
from spiffe_py.clock import Clock, SystemClock
from spiffe_py.errors import NoIdentityError, WorkloadApiError
from spiffe_py.jwtsvid import JwtSvid
from spiffe_py.spiffeid import SpiffeId
from spiffe_py.workloadapi._address import Endpoint, endpoint_from_env, parse_endpoint
from spiffe_py.workloadapi._convert import (
    InvalidResponseError,
    X509BundlesUpdate,
    X509Context,
    jwt_bundles_from_proto,
    jwt_svid_from_token,
    jwt_svids_from_proto,
    x509_bundles_from_proto,
    x509_context_from_proto,
)
from spiffe_py.x509svid import X509Svid

log = logging.getLogger(__name__)

HEADER = (("workload.spiffe.io", "true"),)  # WE-04: exact key and value
_MAX_DETAILS = 512  # bound server-provided text carried in errors
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # bound any single response
# Short reconnect backoff inside grpc: the agent is local, and our own loops add jittered backoff.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
)

_Stub: Any = pb_grpc.SpiffeWorkloadAPIStub  # generated, untyped

T = TypeVar("T")
R = TypeVar("R")


def _endpoint(address: str | None) -> Endpoint:
    return parse_endpoint(address) if address is not None else endpoint_from_env(os.environ)


def _map_rpc_error(rpc: str, err: grpc.RpcError) -> WorkloadApiError:
    """Translate a grpc failure into WorkloadApiError (NoIdentityError for PERMISSION_DENIED)."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    status = code.name if code is not None else "UNKNOWN"
    details = (err.details() if callable(getattr(err, "details", None)) else None) or ""
    details = details[:_MAX_DETAILS]
    cls = NoIdentityError if status == "PERMISSION_DENIED" else WorkloadApiError
    return cls(f"workloadapi: {rpc} failed: {status}: {details!r}", status=status, details=details)


def _no_message(rpc: str) -> WorkloadApiError:
    return WorkloadApiError(f"workloadapi: {rpc} stream ended before the first response", status="UNKNOWN")


def _audiences(audience: str | Iterable[str]) -> tuple[str, ...]:
    auds = (audience,) if isinstance(audience, str) else tuple(audience)
    if not auds or not all(auds):
        raise ValueError("workloadapi: at least one non-empty audience is required")  # WA-19
    return auds


def _jwt_request(audience: Sequence[str], subject: SpiffeId | None) -> pb.JWTSVIDRequest:
    return pb.JWTSVIDRequest(audience=list(audience), spiffe_id=str(subject) if subject is not None else "")


def _validate_request(token: str, audience: str) -> pb.ValidateJWTSVIDRequest:
    if not token or not audience:
        raise ValueError("workloadapi: token and audience are required")  # WA-26
    return pb.ValidateJWTSVIDRequest(svid=token, audience=audience)


def _check_validated(resp: pb.ValidateJWTSVIDResponse) -> None:
    if not resp.spiffe_id:
        raise InvalidResponseError("validate response field 'spiffe_id' is empty")
    if not resp.HasField("claims"):
        raise InvalidResponseError("validate response field 'claims' is empty")  # WA-26


class Watch(Generic[T]):
    """A running sync watch stream: iterate for full-state updates, ``cancel()`` from any thread."""

    def __init__(self, rpc: str, call: Any, convert: Callable[[Any], T]) -> None:
        self._rpc = rpc
        self._call = call
        self._convert = convert

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        while True:
            try:
                message = next(self._call)
            except grpc.RpcError as err:
                raise _map_rpc_error(self._rpc, err) from err
            try:
                return self._convert(message)
            except InvalidResponseError as err:
                log.warning("discarding %s message: %s", self._rpc, err)  # WA-08

    def cancel(self) -> None:
        """Cancel the stream; a blocked iteration ends with a CANCELLED WorkloadApiError."""
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class WorkloadApiClient:
    """Blocking Workload API client over grpcio; safe to share between threads."""

    def __init__(self, address: str | None = None, *, timeout: float | None = None, clock: Clock | None = None) -> None:
        self.endpoint = _endpoint(address)
        self._timeout = timeout
        self._clock = clock or SystemClock()
        self._channel = grpc.insecure_channel(self.endpoint.target, options=_CHANNEL_OPTIONS)
        self._stub = _Stub(self._channel)

    def close(self) -> None:
        """Close the channel; running watches end with CANCELLED."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _first(self, rpc: str, request: Any) -> Any:
        call = getattr(self._stub, rpc)(request, metadata=HEADER, timeout=self._timeout)
        try:
            return next(call)
        except StopIteration:
            raise _no_message(rpc) from None
        except grpc.RpcError as err:
            raise _map_rpc_error(rpc, err) from err
        finally:
            call.cancel()  # one message is all a fetch needs

    def _unary(self, rpc: str, request: Any) -> Any:
        try:
            return getattr(self._stub, rpc)(request, metadata=HEADER, timeout=self._timeout)
        except grpc.RpcError as err:
            raise _map_rpc_error(rpc, err) from err

    def _watch(self, rpc: str, request: Any, convert: Callable[[Any], T]) -> Watch[T]:
        return Watch(rpc, getattr(self._stub, rpc)(request, metadata=HEADER), convert)

    def fetch_x509_context(self) -> X509Context:
        """The current SVIDs, bundles and CRLs (one FetchX509SVID message)."""
        return x509_context_from_proto(self._first("FetchX509SVID", pb.X509SVIDRequest()))

    def fetch_x509_svids(self) -> tuple[X509Svid, ...]:
        """All X509-SVIDs, default first."""
        return self.fetch_x509_context().svids

    def fetch_x509_svid(self) -> X509Svid:
        """The default X509-SVID (WA-29)."""
        return self.fetch_x509_context().default_svid

    def fetch_x509_bundles(self) -> X509BundlesUpdate:
        """The current X.509 bundles and CRLs (one FetchX509Bundles message)."""
        return x509_bundles_from_proto(self._first("FetchX509Bundles", pb.X509BundlesRequest()))

    def fetch_jwt_svids(self, audience: str | Iterable[str], subject: SpiffeId | None = None) -> tuple[JwtSvid, ...]:
        """JWT-SVIDs for ``audience``: all identities, or only ``subject`` (WA-20)."""
        auds = _audiences(audience)
        resp = self._unary("FetchJWTSVID", _jwt_request(auds, subject))
        return jwt_svids_from_proto(resp, auds, now=self._clock.now())

    def fetch_jwt_svid(self, audience: str | Iterable[str], subject: SpiffeId | None = None) -> JwtSvid:
        """The first JWT-SVID for ``audience`` (and ``subject`` if given)."""
        return self.fetch_jwt_svids(audience, subject)[0]

    def fetch_jwt_bundles(self) -> BundleSet:
        """The current JWT bundles (one FetchJWTBundles message)."""
        return jwt_bundles_from_proto(self._first("FetchJWTBundles", pb.JWTBundlesRequest()))

    def validate_jwt_svid(self, token: str, audience: str) -> JwtSvid:
        """Have the agent validate ``token`` for ``audience`` (WA-25, WA-27)."""
        resp = self._unary("ValidateJWTSVID", _validate_request(token, audience))
        _check_validated(resp)
        return jwt_svid_from_token(token, resp.spiffe_id, (audience,), now=self._clock.now())

    def watch_x509_context(self) -> Watch[X509Context]:
        """Stream of full X.509 contexts (WA-05); invalid messages are skipped (WA-08)."""
        return self._watch("FetchX509SVID", pb.X509SVIDRequest(), x509_context_from_proto)

    def watch_x509_bundles(self) -> Watch[X509BundlesUpdate]:
        """Stream of full X.509 bundle states."""
        return self._watch("FetchX509Bundles", pb.X509BundlesRequest(), x509_bundles_from_proto)

    def watch_jwt_bundles(self) -> Watch[BundleSet]:
        """Stream of full JWT bundle sets."""
        return self._watch("FetchJWTBundles", pb.JWTBundlesRequest(), jwt_bundles_from_proto)


class AsyncWorkloadApiClient:
    """asyncio Workload API client over grpc.aio; the channel is created on first use."""

    def __init__(self, address: str | None = None, *, timeout: float | None = None, clock: Clock | None = None) -> None:
        self.endpoint = _endpoint(address)
        self._timeout = timeout
        self._clock = clock or SystemClock()
        self._channel: Any = None
        self._stub: Any = None

    def _method(self, rpc: str) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.endpoint.target, options=_CHANNEL_OPTIONS)
            self._stub = _Stub(self._channel)
        return getattr(self._stub, rpc)

    async def close(self) -> None:
        """Close the channel; running watches end with CANCELLED."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = self._stub = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _first(self, rpc: str, request: Any) -> Any:
        call = self._method(rpc)(request, metadata=HEADER, timeout=self._timeout)
        try:
            message = await call.read()
        except grpc.RpcError as err:
            raise _map_rpc_error(rpc, err) from err
        finally:
            call.cancel()  # one message is all a fetch needs
        if message is grpc.aio.EOF:
            raise _no_message(rpc)
        return message

    async def _unary(self, rpc: str, request: Any) -> Any:
        try:
            return await self._method(rpc)(request, metadata=HEADER, timeout=self._timeout)
        except grpc.RpcError as err:
            raise _map_rpc_error(rpc, err) from err

    async def _watch(self, rpc: str, request: Any, convert: Callable[[Any], R]) -> AsyncGenerator[R, None]:
        call = self._method(rpc)(request, metadata=HEADER)
        try:
            while True:
                try:
                    message = await call.read()
                except grpc.RpcError as err:
                    raise _map_rpc_error(rpc, err) from err
                if message is grpc.aio.EOF:
                    return
                try:
                    update = convert(message)
                except InvalidResponseError as err:
                    log.warning("discarding %s message: %s", rpc, err)  # WA-08
                    continue
                yield update
        finally:
            call.cancel()

    async def fetch_x509_context(self) -> X509Context:
        """The current SVIDs, bundles and CRLs (one FetchX509SVID message)."""
        return x509_context_from_proto(await self._first("FetchX509SVID", pb.X509SVIDRequest()))

    async def fetch_x509_svids(self) -> tuple[X509Svid, ...]:
        """All X509-SVIDs, default first."""
        return (await self.fetch_x509_context()).svids

    async def fetch_x509_svid(self) -> X509Svid:
        """The default X509-SVID (WA-29)."""
        return (await self.fetch_x509_context()).default_svid

    async def fetch_x509_bundles(self) -> X509BundlesUpdate:
        """The current X.509 bundles and CRLs (one FetchX509Bundles message)."""
        return x509_bundles_from_proto(await self._first("FetchX509Bundles", pb.X509BundlesRequest()))

    async def fetch_jwt_svids(
        self, audience: str | Iterable[str], subject: SpiffeId | None = None
    ) -> tuple[JwtSvid, ...]:
        """JWT-SVIDs for ``audience``: all identities, or only ``subject`` (WA-20)."""
        auds = _audiences(audience)
        resp = await self._unary("FetchJWTSVID", _jwt_request(auds, subject))
        return jwt_svids_from_proto(resp, auds, now=self._clock.now())

    async def fetch_jwt_svid(self, audience: str | Iterable[str], subject: SpiffeId | None = None) -> JwtSvid:
        """The first JWT-SVID for ``audience`` (and ``subject`` if given)."""
        return (await self.fetch_jwt_svids(audience, subject))[0]

    async def fetch_jwt_bundles(self) -> BundleSet:
        """The current JWT bundles (one FetchJWTBundles message)."""
        return jwt_bundles_from_proto(await self._first("FetchJWTBundles", pb.JWTBundlesRequest()))

    async def validate_jwt_svid(self, token: str, audience: str) -> JwtSvid:
        """Have the agent validate ``token`` for ``audience`` (WA-25, WA-27)."""
        resp = await self._unary("ValidateJWTSVID", _validate_request(token, audience))
        _check_validated(resp)
        return jwt_svid_from_token(token, resp.spiffe_id, (audience,), now=self._clock.now())

    def watch_x509_context(self) -> AsyncGenerator[X509Context, None]:
        """Async stream of full X.509 contexts (WA-05); invalid messages are skipped (WA-08)."""
        return self._watch("FetchX509SVID", pb.X509SVIDRequest(), x509_context_from_proto)

    def watch_x509_bundles(self) -> AsyncGenerator[X509BundlesUpdate, None]:
        """Async stream of full X.509 bundle states."""
        return self._watch("FetchX509Bundles", pb.X509BundlesRequest(), x509_bundles_from_proto)

    def watch_jwt_bundles(self) -> AsyncGenerator[BundleSet, None]:
        """Async stream of full JWT bundle sets."""
        return self._watch("FetchJWTBundles", pb.JWTBundlesRequest(), jwt_bundles_from_proto)
