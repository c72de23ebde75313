"""SpiffeWorkloadAPI handlers (grpclib) over narrow seams.

Order of checks on every call: security header (WE-04..06), caller attestation,
readiness (WE-13), identity (WE-14). The caller was captured when its connection was
accepted; it is passed on as a parameter. Errors map to gRPC status by the table in
:mod:`spiffe_agent.workloadapi.status`::

    handler = WorkloadApiHandler(attestor=CallerAttestor(attestors), source=ManagerSource(manager),
                                 validator=JwtSvidValidator(clock))
    server = CoalescingServer([handler], accept=accept_caller)
    await server.start(path="/run/spiffe-py-agent/public/api.sock")
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from time import perf_counter
from typing import Any, Protocol

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from spiffe_agent.attest.caller import Caller
from spiffe_agent.errors import NoIdentityIssuedError, WorkloadAttestationError
from spiffe_agent.manager.cache import Entry, JwtToken, WorkloadView
from spiffe_agent.metrics import WORKLOAD_API_LATENCY
from spiffe_agent.workloadapi.coalesce import connection_of, send_stream_message, send_unary_response
from spiffe_agent.workloadapi.convert import (
    audience_list,
    jwt_bundles_response,
    jwt_svid_response,
    visible_bundles,
    x509_bundles_response,
    x509_svid_response,
)
from spiffe_agent.workloadapi.source import WorkloadSource
from spiffe_agent.workloadapi.status import to_grpc_error
from spiffe_py._memo import Identity, Memo
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.workload_grpc import SpiffeWorkloadAPIBase
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import InvalidJwtSvidError, SpiffeError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId

SECURITY_HEADER = "workload.spiffe.io"
log = logging.getLogger(__name__)

MEMO_SIZE = 256
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # gRPC clients' default receive limit
MAX_TOKEN_BYTES = 64 * 1024
MAX_AUDIENCES = 32
MAX_AUDIENCE_LEN = 256  # characters per audience value, as the server allows


class CallerAttestor(Protocol):
    """Selectors for the process behind a connection."""

    async def attest(self, caller: Caller) -> frozenset[Selector]:
        """Attest the caller."""
        ...


class JwtValidator(Protocol):
    """Validates a JWT-SVID against the bundles the caller may see."""

    def validate(
        self, token: str, audience: str, bundles: Sequence[SpiffeBundle]
    ) -> tuple[SpiffeId, Mapping[str, Any]]:
        """Return (subject, claims); raise SpiffeError when invalid."""
        ...


def connection_caller(stream: Any) -> Caller:
    """The caller captured when the stream's connection was accepted (or why it was refused)."""
    conn = connection_of(stream)
    context = None if conn is None else conn.context
    if isinstance(context, Caller):
        return context
    if isinstance(context, SpiffeError):
        raise context.with_traceback(None)  # raised once per call: no traceback piling up on it
    raise WorkloadAttestationError("attest: no caller was captured for this connection")


def _invalid(message: str) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, message)


def check_security_header(metadata: Any) -> None:
    """Exactly one ``workload.spiffe.io: true`` (WE-04..06)."""
    values = [] if metadata is None else metadata.getall(SECURITY_HEADER, [])
    if values != ["true"]:
        raise _invalid("security header missing from request")


def check_not_revoked(claims: Mapping[str, Any], view: WorkloadView) -> None:
    """Refuse a JWT-SVID whose ``jti`` was revoked."""
    jti = claims.get("jti")
    if isinstance(jti, str) and jti in view.revoked_jtis:
        raise InvalidJwtSvidError("jwtsvid: token has been revoked")


class WorkloadApiHandler(SpiffeWorkloadAPIBase):
    """The Workload API service."""

    def __init__(
        self,
        *,
        attestor: CallerAttestor,
        source: WorkloadSource,
        validator: JwtValidator,
        caller_of: Callable[[Any], Caller] = connection_caller,
    ) -> None:
        self._attestor = attestor
        self._source = source
        self._validator = validator
        self._caller_of = caller_of
        self._x509_response = ResponseMemo(x509_svid_response)  # shared by all streams
        self._jwt_response = JwtResponseMemo()

    async def _caller(self, stream: Any) -> tuple[Any, Caller, frozenset[Selector]]:
        # header first: no attestation work for requests that fail it
        check_security_header(stream.metadata)
        try:
            request = await stream.recv_message()
        except DecodeError as err:
            raise _invalid("request message cannot be decoded") from err
        if request is None:  # the client ended the stream without a request message
            raise _invalid("request message missing")
        try:
            caller = self._caller_of(stream)
            return request, caller, await self._attestor.attest(caller)
        except Exception as err:
            raise to_grpc_error(err) from err

    async def _stream_views(self, method: str, stream: Any, build: Callable[[WorkloadView], Any],
                            need_svids: bool) -> None:
        started = perf_counter()
        sent = False

        def first_sent() -> None:  # a stream's latency is the time to its first message
            nonlocal sent
            if not sent:
                sent = True
                WORKLOAD_API_LATENCY.observe(perf_counter() - started, method, "OK")

        try:
            _, caller, selectors = await self._caller(stream)
            await self._send_views(stream, caller, selectors, build, need_svids, on_send=first_sent)
        except GRPCError as err:
            if not sent:  # refused before its first message: the refusal is its latency
                WORKLOAD_API_LATENCY.observe(perf_counter() - started, method, err.status.name)
            raise

    async def _send_views(self, stream: Any, caller: Caller, selectors: frozenset[Selector],
                          build: Callable[[WorkloadView], Any], need_svids: bool, *,
                          on_send: Callable[[], None]) -> None:
        try:
            async with self._source.subscribe(caller, selectors, svids=need_svids) as sub:
                last = None
                while True:
                    view = await sub.next()
                    if not view.identities:
                        raise NoIdentityIssuedError("no identity issued")
                    if need_svids and not view.complete:
                        continue  # wait until every identity is minted so the default comes first
                    if need_svids and not view.svids():
                        raise NoIdentityIssuedError("no identity issued")  # the server refused every one
                    msg = build(view)
                    if msg != last:
                        _check_response_size(msg, len(view.identities))
                        await send_stream_message(stream, msg)
                        on_send()
                        last = msg
        except GRPCError:
            raise
        except Exception as err:
            raise to_grpc_error(err) from err

    async def FetchX509SVID(self, stream: Any) -> None:
        """Stream X.509-SVIDs: full state now, then on every change."""
        await self._stream_views("FetchX509SVID", stream, self._x509_response, need_svids=True)

    async def FetchX509Bundles(self, stream: Any) -> None:
        """Stream X.509 bundles."""
        await self._stream_views("FetchX509Bundles", stream, x509_bundles_response, need_svids=False)

    async def FetchJWTBundles(self, stream: Any) -> None:
        """Stream JWT bundles (JWKS)."""
        await self._stream_views("FetchJWTBundles", stream, jwt_bundles_response, need_svids=False)

    async def FetchJWTSVID(self, stream: Any) -> None:
        """Mint (or reuse cached) JWT-SVIDs for the caller."""
        await _timed("FetchJWTSVID", self._fetch_jwt_svid(stream))

    async def _fetch_jwt_svid(self, stream: Any) -> None:
        request, caller, selectors = await self._caller(stream)
        audience = audience_list(request.audience)
        if not audience:
            raise _invalid("audience must be specified")
        if len(audience) > MAX_AUDIENCES:
            raise _invalid(f"too many audience values (max {MAX_AUDIENCES})")
        if any(len(a) > MAX_AUDIENCE_LEN for a in audience):
            raise _invalid(f"audience values must be at most {MAX_AUDIENCE_LEN} characters")
        try:
            spiffe_id = SpiffeId.parse(request.spiffe_id) if request.spiffe_id else None
            tokens = await self._source.fetch_jwt(caller, selectors, audience, spiffe_id)
        except Exception as err:
            raise to_grpc_error(err) from err
        await send_unary_response(stream, self._jwt_response(tokens))

    async def ValidateJWTSVID(self, stream: Any) -> None:
        """Validate a JWT-SVID against the bundles the caller may see; return its claims."""
        await _timed("ValidateJWTSVID", self._validate_jwt_svid(stream))

    async def _validate_jwt_svid(self, stream: Any) -> None:
        request, caller, selectors = await self._caller(stream)
        if not request.audience:
            raise _invalid("audience must be specified")
        if len(request.audience) > MAX_AUDIENCE_LEN:
            raise _invalid(f"audience must be at most {MAX_AUDIENCE_LEN} characters")
        if not request.svid:
            raise _invalid("svid must be specified")
        if len(request.svid) > MAX_TOKEN_BYTES:
            raise _invalid("svid is too large")
        try:
            view = self._source.view(caller, selectors)
            bundles = visible_bundles(view)
            subject, claims = self._source.validate_jwt(
                caller, selectors, view, request.audience,
                lambda: self._validator.validate(request.svid, request.audience, bundles))
            check_not_revoked(claims, view)
        except Exception as err:
            raise to_grpc_error(err) from err
        struct = struct_pb2.Struct()
        struct.update(dict(claims))
        await send_unary_response(stream, workload_pb2.ValidateJWTSVIDResponse(spiffe_id=str(subject), claims=struct))

    async def FetchWITSVID(self, stream: Any) -> None:
        """WIT-SVIDs are not supported (WA-28)."""
        raise GRPCError(Status.UNIMPLEMENTED, "wit-svid profile is not supported")

    async def FetchWITBundles(self, stream: Any) -> None:
        """WIT bundles are not supported (WA-28)."""
        raise GRPCError(Status.UNIMPLEMENTED, "wit-svid profile is not supported")


async def _timed(method: str, call: Awaitable[None]) -> None:
    """Await a unary call, observing its latency by status (OK, or the status it was refused with)."""
    started = perf_counter()
    code = "OK"
    try:
        await call
    except GRPCError as err:
        code = err.status.name
        raise
    finally:
        WORKLOAD_API_LATENCY.observe(perf_counter() - started, method, code)


def _snapshot(view: WorkloadView) -> tuple[object, ...]:
    """The immutable parts of ``view`` a response is built from (frozen entries, SVIDs, bundles, CRLs)."""
    return (view.bundle, view.crls, *(x for i in view.identities for x in (i.entry, i.svid, i.refused)),
            *(x for item in view.federated.items() for x in item))


def _check_response_size(msg: Any, identities: int) -> None:
    """Refuse, with a message that says why, a response no standard Workload API client would accept.

    gRPC clients (go-spiffe, py-spiffe, java-spiffe, grpcio) receive at most 4 MiB per message by
    default; a bigger one fails in the client as an unexplained RESOURCE_EXHAUSTED. About 3,000
    X.509 identities for one workload reach it (docs/architecture.md, "Agent SVID cache and response size").
    """
    size = msg.ByteSize()
    if size > MAX_RESPONSE_BYTES:
        log.warning("workload api response too large", extra={"bytes": size, "identities": identities})
        raise GRPCError(Status.RESOURCE_EXHAUSTED,
                        f"response of {size} bytes for {identities} identities is over the {MAX_RESPONSE_BYTES} "
                        "bytes a Workload API client accepts: register fewer entries for this workload's selectors")


class ResponseMemo:
    """Responses already built from the same immutable snapshot, so N streams over one cache state build once.

    The key is every snapshot part by identity (the key keeps them alive). Any change in the cache
    (a rotation, a revocation, an entry change) yields new objects and so a new key: nothing stale
    is served, and changes still go out at once.
    """

    def __init__(self, build: Callable[[WorkloadView], Any], size: int = MEMO_SIZE) -> None:
        self._build = build
        self._memo: Memo[Identity, Any] = Memo(size)

    def __call__(self, view: WorkloadView) -> Any:
        """``build(view)``, or the response built for the same snapshot before."""
        key = Identity(*_snapshot(view))
        response = self._memo.get(key)
        if response is None:
            response = self._build(view)
            self._memo.put(key, response)
        return response


class JwtResponseMemo:
    """JWTSVIDResponses already built from the same (entry, token) objects.

    Cached tokens are reused until half-life, so a warm FetchJWTSVID answers with the same
    objects again; the key is those objects by identity. A new token or entry is a new key.
    """

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self._memo: Memo[Identity, Any] = Memo(size)

    def __call__(self, tokens: list[tuple[Entry, JwtToken]]) -> Any:
        """``jwt_svid_response(tokens)``, or the response built for the same objects before."""
        key = Identity(*(x for pair in tokens for x in pair))
        response = self._memo.get(key)
        if response is None:
            response = jwt_svid_response(tokens)
            self._memo.put(key, response)
        return response
