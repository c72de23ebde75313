"""A minimal agent-API client for server tests (grpclib over TLS / mTLS).

::

    agent = attest_join_token(srv, token)                 # TestAgent with its SVID and key
    async with agent_channel(srv, agent) as stub:
        resp = await stub.BatchNewX509SVID(req)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from grpclib.client import Channel

from spiffe_py._proto.spiffepy.server.v1 import agent_pb2
from spiffe_py._proto.spiffepy.server.v1.agent_grpc import AgentAPIStub
from tests.support.server_proc import ServerProc


@dataclass
class TestAgent:
    """An attested test agent: its ID, SVID chain (leaf first) and key."""

    __test__ = False
    spiffe_id: str
    chain: list[x509.Certificate]
    key: ec.EllipticCurvePrivateKey
    result: agent_pb2.AttestResult


def csr_for(key: ec.EllipticCurvePrivateKey, spiffe_id: str | None = None) -> bytes:
    """A DER CSR for ``key`` (with a URI SAN when ``spiffe_id`` is given)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if spiffe_id:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
                                        critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def server_roots(srv: ServerProc) -> str:
    """The server's bundle roots as PEM (from the CLI)."""
    return srv.cli("bundle", "show", "--format", "pem").stdout


def client_context(roots_pem: str, agent: TestAgent | None = None) -> ssl.SSLContext:
    """TLS client context trusting ``roots_pem``; presents the agent SVID when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the server SVID carries a SPIFFE ID, not a DNS name
    ctx.load_verify_locations(cadata=roots_pem)
    ctx.set_alpn_protocols(["h2"])
    if agent is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            cert.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in agent.chain))
            key.write_bytes(agent.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
            ctx.load_cert_chain(cert, key)
    return ctx


@contextlib.asynccontextmanager
async def agent_channel(srv: ServerProc, agent: TestAgent | None = None,
                        roots_pem: str | None = None) -> AsyncIterator[AgentAPIStub]:
    """A stub on a fresh channel to the server's TCP listener."""
    ctx = client_context(roots_pem or server_roots(srv), agent)
    channel = Channel(*srv.address, ssl=ctx)
    try:
        yield AgentAPIStub(channel)
    finally:
        channel.close()


ChallengeHandler = Callable[[bytes], Awaitable[bytes]]


async def attest(srv: ServerProc, attestation_type: str, payload: bytes,
                 on_challenge: ChallengeHandler | None = None) -> TestAgent:
    """Run AttestAgent; raises grpclib's GRPCError on refusal."""
    key = ec.generate_private_key(ec.SECP256R1())
    async with agent_channel(srv) as stub, stub.AttestAgent.open() as stream:
        await stream.send_message(agent_pb2.AttestAgentRequest(params=agent_pb2.AttestParams(
            attestation_type=attestation_type, payload=payload, csr=csr_for(key))))
        while True:
            resp = await stream.recv_message()
            if resp is None:
                await stream.end()
                await stream.recv_trailing_metadata()  # raises the server's GRPCError
                raise AssertionError("stream ended without a result")
            if resp.HasField("result"):
                break
            assert on_challenge is not None, "unexpected challenge"
            await stream.send_message(agent_pb2.AttestAgentRequest(
                challenge_response=await on_challenge(resp.challenge)))
        await stream.end()
    chain = [x509.load_der_x509_certificate(d) for d in resp.result.svid_chain]
    return TestAgent(resp.result.spiffe_id, chain, key, resp.result)


def attest_join_token(srv: ServerProc, token: str) -> TestAgent:
    """Attest with a join token (sync wrapper)."""
    return asyncio.run(attest(srv, "join_token", token.encode()))
