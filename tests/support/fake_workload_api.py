"""A real Workload API server (grpclib over a Unix socket) with scripted state, for tests.

It runs its own event loop in a thread, so sync and async clients in the test process (or in
subprocesses) talk to it over a real socket. It counts calls, records metadata, checks the
security header like SPIRE (WE-05), pushes full-state updates to open streams, and can fail
any RPC with a chosen status::

    with FakeWorkloadApi(tmp_path / "api.sock") as api:
        api.set_x509(x509_response([ca.issue_svid("spiffe://example.org/web")], ca))
        client = WorkloadApiClient(api.address)
        client.fetch_x509_context()
        assert api.calls["FetchX509SVID"] == 1
        api.fail("FetchX509SVID", Status.PERMISSION_DENIED, "no identity issued")
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol
from grpclib.server import Server, Stream

from spiffe_py._proto import workload_grpc
from spiffe_py._proto import workload_pb2 as pb
from tests.support.ca import CA, Issued

HEADER_KEY = "workload.spiffe.io"
STREAMS = ("FetchX509SVID", "FetchX509Bundles", "FetchJWTBundles")
UNARIES = ("FetchJWTSVID", "ValidateJWTSVID")


def x509_svid_message(issued: Issued, ca: CA, *, hint: str = "") -> pb.X509SVID:
    """An X509SVID message for ``issued`` with ``ca``'s root as its bundle."""
    spiffe_id = issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uri = spiffe_id.get_values_for_type(x509.UniformResourceIdentifier)[0]
    return pb.X509SVID(
        spiffe_id=uri,
        x509_svid=issued.chain_der(),
        x509_svid_key=issued.key_der(),
        bundle=ca.root.cert.public_bytes(Encoding.DER),
        hint=hint,
    )


def x509_response(
    svids: Sequence[Issued],
    ca: CA,
    *,
    federated: Mapping[str, CA] | None = None,
    crls: Iterable[x509.CertificateRevocationList] = (),
) -> pb.X509SVIDResponse:
    """An X509SVIDResponse: ``svids`` (default first), federated roots keyed ``spiffe://td``, CRLs."""
    return pb.X509SVIDResponse(
        svids=[x509_svid_message(issued, ca) for issued in svids],
        federated_bundles={key: other.root.cert.public_bytes(Encoding.DER) for key, other in (federated or {}).items()},
        crl=[crl.public_bytes(Encoding.DER) for crl in crls],
    )


class _Service(workload_grpc.SpiffeWorkloadAPIBase):
    """Handlers that read the fake's state; all run on the fake's loop."""

    def __init__(self, fake: FakeWorkloadApi) -> None:
        self.fake = fake

    async def FetchX509SVID(self, stream: Stream[Any, Any]) -> None:
        await self.fake._serve_stream("FetchX509SVID", stream)

    async def FetchX509Bundles(self, stream: Stream[Any, Any]) -> None:
        await self.fake._serve_stream("FetchX509Bundles", stream)

    async def FetchJWTBundles(self, stream: Stream[Any, Any]) -> None:
        await self.fake._serve_stream("FetchJWTBundles", stream)

    async def FetchJWTSVID(self, stream: Stream[Any, Any]) -> None:
        await self.fake._serve_unary("FetchJWTSVID", stream)

    async def ValidateJWTSVID(self, stream: Stream[Any, Any]) -> None:
        await self.fake._serve_unary("ValidateJWTSVID", stream)

    async def FetchWITSVID(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "not implemented")  # WA-28

    async def FetchWITBundles(self, stream: Stream[Any, Any]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "not implemented")


class _DroppingServer(Server):  # type: ignore[misc]  # grpclib is untyped here
    """A grpclib Server that can also drop its open connections, as a killed agent process would."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def drop_connections(self) -> None:
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)
            if connection is not None:
                connection.close()


class FakeWorkloadApi:
    """Scripted Workload API server on ``socket_path`` (see the module docstring)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.calls: Counter[str] = Counter()
        self.metadata: list[tuple[str, dict[str, str]]] = []
        self.requests: list[tuple[str, Any]] = []
        self._responses: dict[str, Any] = {}
        self._failures: dict[str, tuple[Status, str]] = {}
        self._version = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-workload-api", daemon=True)
        self._thread.start()
        self._changed = self._run(self._make_condition())
        self._server: _DroppingServer | None = None

    @staticmethod
    async def _make_condition() -> asyncio.Condition:
        return asyncio.Condition()

    @property
    def address(self) -> str:
        """The ``unix://`` address of the socket."""
        return f"unix://{self.socket_path}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the socket."""

        async def start() -> None:
            self._server = _DroppingServer([_Service(self)])
            await self._server.start(path=str(self.socket_path))

        self._run(start())

    def stop(self) -> None:
        """Close the socket and every connection (like an agent restart); cancel running RPCs."""

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                self._server.drop_connections()
                await self._server.wait_closed()
                self._server = None

        self._run(stop())

    def shutdown(self) -> None:
        """Stop the server and its loop thread."""
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FakeWorkloadApi:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- scripting (thread-safe) -----------------------------------------------------------

    def _update(self, change: Any) -> None:
        async def apply() -> None:
            async with self._changed:
                change()
                self._version += 1
                self._changed.notify_all()

        self._run(apply())

    def set_response(self, rpc: str, response: Any) -> None:
        """Serve ``response`` for ``rpc``; open streams of that RPC receive it at once (WA-06)."""
        self._update(lambda: self._responses.__setitem__(rpc, response))

    def set_x509(self, response: pb.X509SVIDResponse) -> None:
        """Serve and push an X509SVIDResponse."""
        self.set_response("FetchX509SVID", response)

    def fail(self, rpc: str, status: Status, message: str) -> None:
        """Fail new calls of ``rpc`` and end its open streams with ``status``."""
        self._update(lambda: self._failures.__setitem__(rpc, (status, message)))

    def recover(self, rpc: str) -> None:
        """Stop failing ``rpc``."""
        self._update(lambda: self._failures.pop(rpc, None))

    # -- handlers (fake's loop) ------------------------------------------------------------

    async def _begin(self, rpc: str, stream: Stream[Any, Any]) -> Any:
        self.calls[rpc] += 1
        metadata = {key: str(value) for key, value in stream.metadata.items()} if stream.metadata else {}
        self.metadata.append((rpc, metadata))
        if stream.metadata is None or stream.metadata.getall(HEADER_KEY, []) != ["true"]:
            raise GRPCError(Status.INVALID_ARGUMENT, "security header missing from request")  # WE-05
        request = await stream.recv_message()
        self.requests.append((rpc, request))
        self._raise_failure(rpc)
        return request

    def _raise_failure(self, rpc: str) -> None:
        failure = self._failures.get(rpc)
        if failure is not None:
            raise GRPCError(failure[0], failure[1])

    async def _serve_unary(self, rpc: str, stream: Stream[Any, Any]) -> None:
        await self._begin(rpc, stream)
        response = self._responses.get(rpc)
        if response is None:
            raise GRPCError(Status.PERMISSION_DENIED, "no identity issued")
        await stream.send_message(response)

    async def _serve_stream(self, rpc: str, stream: Stream[Any, Any]) -> None:
        await self._begin(rpc, stream)
        sent: Any = None
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda last=sent: self._news(rpc, last))
                self._raise_failure(rpc)
                sent = self._responses[rpc]
            await stream.send_message(sent)

    def _news(self, rpc: str, last: Any) -> bool:
        """Whether a stream that last sent ``last`` has something new: a response or a failure."""
        return rpc in self._failures or self._responses.get(rpc) is not last
