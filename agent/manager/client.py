"""grpclib client for the server's Agent API (I/O adapter).

The server is verified against the trust bundle with hostname checks off; its
SPIFFE ID (``spiffe://<td>/spire/server``) is then checked on every call before
any request body (join token, CSR) is sent::

    ctx = server_ssl_context(bundle_certs, client_cert=(svid_path, key_path))
    client = ServerClient("127.0.0.1", 8081, td, ctx)
    async for msg in client.sync_authorized(): ...
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from time import perf_counter
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from grpclib.protocol import H2Protocol

from spiffe_agent.errors import ServerUnavailableError
from spiffe_agent.metrics import AGENT_API_LATENCY
from spiffe_agent.nodeattest.base import NodeAttestorClient
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from spiffe_py.spiffeid import SpiffeId, TrustDomain

CALL_TIMEOUT = 30.0
KEEPALIVE_S = 4.0
KEEPALIVE_TIMEOUT_S = 4.0
SSL_SHUTDOWN_TIMEOUT_S = 1.0
MAX_CHALLENGES = 4  # more rounds than any attestor needs: a server asking more is refused
_TRANSPORT_ERRORS = (OSError, ssl.SSLError, asyncio.TimeoutError, StreamTerminatedError, ProtocolError)


class ServerCallError(ServerUnavailableError):
    """An Agent API call failed; ``status`` is the gRPC status name (UNAVAILABLE for transport errors)."""

    def __init__(self, message: str, status: str = "UNAVAILABLE") -> None:
        self.status = status
        super().__init__(message)


def server_ssl_context(
    bundle: Sequence[x509.Certificate], *, client_cert: tuple[Path, Path] | None = None, insecure: bool = False
) -> ssl.SSLContext:
    """TLS context trusting ``bundle`` (SPIFFE IDs have no hostname, so hostname checks are off)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    if insecure:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        if not bundle:
            raise ValueError("client: a trust bundle is required unless bootstrapping insecurely")
        ctx.verify_mode = ssl.CERT_REQUIRED
        pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in bundle)
        ctx.load_verify_locations(cadata=pem.decode())
    if client_cert is not None:
        ctx.load_cert_chain(certfile=str(client_cert[0]), keyfile=str(client_cert[1]))
    ctx.set_alpn_protocols(["h2"])
    return ctx


def peer_spiffe_ids(cert: dict[str, Any] | None) -> list[str]:
    """URI SANs from ``ssl.SSLSocket.getpeercert()`` output."""
    if not cert:
        return []
    return [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]


def _method_name(method: Any) -> str:
    """The RPC name of a grpclib stub method (``/pkg.AgentAPI/RenewAgent`` -> ``RenewAgent``)."""
    return str(getattr(method, "name", "")).rsplit("/", 1)[-1] or "unknown"

class _KeepaliveChannel(Channel):  # type: ignore[misc]  # grpclib ships no type hints
    """A Channel whose TLS close gives up after SSL_SHUTDOWN_TIMEOUT_S.

    When a keepalive PING goes unanswered, grpclib closes the transport; asyncio would then wait
    up to 30 s for a paused server's TLS close_notify before the open streams learn of it.
    """

    async def _create_connection(self) -> H2Protocol:
        _, protocol = await self._loop.create_connection(
            self._protocol_factory, self._host, self._port, ssl=self._ssl,
            ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT_S)
        return protocol


class ServerClient:
    """One connection to the server's Agent API."""

    def __init__(self, host: str, port: int, trust_domain: TrustDomain, ctx: ssl.SSLContext) -> None:
        self.address = (host, port)
        self._expected = str(SpiffeId.from_path(trust_domain, "/spire/server"))
        self._verify_peer = ctx.verify_mode == ssl.CERT_REQUIRED
        # HTTP/2 PINGs on open calls: a server that stops answering (paused, partitioned) ends the
        # sync stream within KEEPALIVE_S + KEEPALIVE_TIMEOUT_S, so the agent fails over to the next one
        self._channel = _KeepaliveChannel(host, port, ssl=ctx, config=Configuration(
            _keepalive_time=KEEPALIVE_S, _keepalive_timeout=KEEPALIVE_TIMEOUT_S, _http2_max_pings_without_data=0,
            _http2_min_sent_ping_interval_without_data=KEEPALIVE_S))
        self._stub = AgentAPIStub(self._channel)

    def close(self) -> None:
        """Close the connection."""
        self._channel.close()

    def _check_peer(self, stream: Any) -> None:
        if not self._verify_peer:
            return  # insecure bootstrap: nothing to check the ID against
        ids = peer_spiffe_ids(stream.peer.cert())
        if ids != [self._expected]:
            raise ServerCallError(f"client: server presented {ids!r}, expected {self._expected!r}", "UNAUTHENTICATED")

    async def _unary(self, method: Any, request: Any) -> Any:
        started, code = perf_counter(), "OK"
        try:
            async with method.open(timeout=CALL_TIMEOUT) as stream:
                await stream.send_request()
                self._check_peer(stream)
                await stream.send_message(request, end=True)
                return await stream.recv_message()
        except GRPCError as err:
            code = err.status.name
            raise ServerCallError(f"client: server refused the call: {err.message!r}", err.status.name) from err
        except _TRANSPORT_ERRORS as err:
            code = "UNAVAILABLE"
            raise ServerCallError(f"client: server unreachable: {type(err).__name__}") from err
        except ServerCallError as err:
            code = err.status
            raise
        finally:
            AGENT_API_LATENCY.observe(perf_counter() - started, _method_name(method), code)

    async def attest(self, attestor: NodeAttestorClient, csr_der: bytes) -> agent_pb2.AttestResult:
        """Node attestation: send the attestor's evidence, answer the server's challenges, return the result."""
        params = agent_pb2.AttestParams(attestation_type=attestor.name, payload=attestor.payload(), csr=csr_der)
        try:
            async with self._stub.AttestAgent.open(timeout=CALL_TIMEOUT) as stream:
                await stream.send_request()
                self._check_peer(stream)
                await stream.send_message(agent_pb2.AttestAgentRequest(params=params))
                for _ in range(MAX_CHALLENGES + 1):
                    response = await stream.recv_message()
                    if response is None:
                        break
                    if response.HasField("result"):
                        await stream.end()
                        result: agent_pb2.AttestResult = response.result
                        return result
                    answer = attestor.answer(bytes(response.challenge))
                    await stream.send_message(agent_pb2.AttestAgentRequest(challenge_response=answer))
        except GRPCError as err:
            raise ServerCallError(f"client: server refused the call: {err.message!r}", err.status.name) from err
        except _TRANSPORT_ERRORS as err:
            raise ServerCallError(f"client: server unreachable: {type(err).__name__}") from err
        raise ServerCallError("client: server sent no attestation result")

    async def renew(self, csr_der: bytes) -> list[bytes]:
        """Renew the agent SVID; returns the new DER chain."""
        response = await self._unary(self._stub.RenewAgent, agent_pb2.RenewAgentRequest(csr=csr_der))
        return list(response.svid_chain)

    async def batch_new_x509(self, params: Sequence[agent_pb2.NewX509SVIDParams]) -> list[agent_pb2.X509SVIDResult]:
        """Sign a batch of workload CSRs."""
        response = await self._unary(self._stub.BatchNewX509SVID, agent_pb2.BatchNewX509SVIDRequest(params=params))
        return list(response.results)

    async def new_jwt(self, entry_id: str, audience: Sequence[str]) -> agent_pb2.NewJWTSVIDResponse:
        """Mint a JWT-SVID for an entry."""
        request = agent_pb2.NewJWTSVIDRequest(entry_id=entry_id, audience=list(audience))
        response: agent_pb2.NewJWTSVIDResponse = await self._unary(self._stub.NewJWTSVID, request)
        return response

    async def forward_audit(self, records: Sequence[str]) -> int:
        """Forward canonical JSON audit records (chain order); returns how many the server accepted."""
        request = agent_pb2.ForwardAuditRequest(records=list(records))
        response: agent_pb2.ForwardAuditResponse = await self._unary(self._stub.ForwardAudit, request)
        return int(response.accepted)

    async def quarantine_own(self, entry_id: str, reason: str) -> int:
        """Ask the server to quarantine one of our entries; returns how many SVIDs it revoked."""
        request = agent_pb2.QuarantineOwnRequest(entry_id=entry_id, reason=reason)
        response: agent_pb2.QuarantineOwnResponse = await self._unary(self._stub.QuarantineOwn, request)
        return int(response.revoked)

    async def revoke_own(self, serials: Sequence[str], jtis: Sequence[str], reason: str) -> int:
        """Revoke SVIDs this agent was issued (a bound process exited); returns how many."""
        request = agent_pb2.RevokeOwnRequest(x509_serials=list(serials), jwt_ids=list(jtis), reason=reason)
        response: agent_pb2.RevokeOwnResponse = await self._unary(self._stub.RevokeOwn, request)
        return int(response.revoked)

    async def sync_authorized(self) -> AsyncIterator[agent_pb2.SyncAuthorizedResponse]:
        """Stream of sync messages (first one full) until the server ends it."""
        try:
            async with self._stub.SyncAuthorized.open() as stream:
                await stream.send_request()
                self._check_peer(stream)
                await stream.send_message(agent_pb2.SyncAuthorizedRequest(), end=True)
                async for msg in stream:
                    yield msg
        except GRPCError as err:
            raise ServerCallError(f"client: sync refused: {err.message!r}", err.status.name) from err
        except _TRANSPORT_ERRORS as err:
            raise ServerCallError(f"client: sync stream broke: {type(err).__name__}") from err
