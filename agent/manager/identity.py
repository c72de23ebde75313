"""The agent's own identity: node attestation, renewal, re-attestation, trust anchors (async shell).

::

    identity = AgentIdentity(servers, trust_domain=td, data_dir=path, node_attestor=attestor, clock=clock)
    await identity.start()            # the stored identity, or attest (every server address is tried)
    await identity.rotate_loop(5.0)   # renew at half-life (re-attest when it lapsed), until cancelled
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from spiffe_agent.errors import AgentConfigError, NodeAttestationError
from spiffe_agent.manager.client import ServerCallError, server_ssl_context
from spiffe_agent.manager.convert import ServerResponseError, bundle_from_proto, leaf_spiffe_id, load_chain
from spiffe_agent.manager.servers import FAILOVER_STATUSES, ServerPool, display_address
from spiffe_agent.manager.storage import AgentState, clear_state, key_path, load_state, save_state, svid_path
from spiffe_agent.metrics import SYNC_ERRORS
from spiffe_agent.nodeattest.base import NodeAttestorClient
from spiffe_py._der import BIT_STRING, SEQUENCE, SET, der_extension, der_integer, der_oid, tlv
from spiffe_py.clock import Clock
from spiffe_py.rotation import should_rotate
from spiffe_py.spiffeid import SpiffeId, TrustDomain

log = logging.getLogger(__name__)

JITTER = 0.1  # rotate within ±10% of half-life, like SPIRE


def display_id(spiffe_id: SpiffeId) -> str:
    """An agent ID safe for logs: a join-token agent's ID embeds the token, so it is masked."""
    text = str(spiffe_id)
    head, sep, _ = text.partition("/spire/agent/join_token/")
    return f"{head}{sep}[REDACTED]" if sep else text


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


# What every agent CSR shares, encoded once (PKCS#10, RFC 2986 §4).
_CSR_VERSION = der_integer(0)
_CSR_SUBJECT = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")]).public_bytes()
_EXTENSION_REQUEST = der_oid("1.2.840.113549.1.9.14")  # PKCS#9 extensionRequest
_ECDSA_WITH_SHA256 = tlv(SEQUENCE, der_oid("1.2.840.10045.4.3.2"))
_ATTRIBUTES = 0xA0  # [0] IMPLICIT SET OF Attribute


def build_csr(key: ec.EllipticCurvePrivateKey, spiffe_id: SpiffeId | None = None) -> bytes:
    """DER CSR for ``key``, with the SPIFFE ID as URI SAN when known.

    Assembled from cryptography's encodings of the name, key and SAN and signed with the key:
    half the cost of ``CertificateSigningRequestBuilder``, whose request info it reproduces byte
    for byte (tests/unit/agent/test_agent_csr.py holds the builder as the reference).
    """
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    attributes = b""
    if spiffe_id is not None:
        san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(spiffe_id))])
        extensions = tlv(SEQUENCE, der_extension(x509.Extension(san.oid, False, san)))
        attributes = tlv(SEQUENCE, _EXTENSION_REQUEST + tlv(SET, extensions))
    info = tlv(SEQUENCE, _CSR_VERSION + _CSR_SUBJECT + spki + tlv(_ATTRIBUTES, attributes))
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    return tlv(SEQUENCE, info + _ECDSA_WITH_SHA256 + tlv(BIT_STRING, b"\x00" + signature))


class AgentIdentity:
    """Holds the agent SVID and trust anchors, and keeps ``servers`` connected with them."""

    def __init__(self, servers: ServerPool, *, trust_domain: TrustDomain, data_dir: Path,
                 node_attestor: NodeAttestorClient | None, clock: Clock, rng: random.Random,
                 bootstrap_bundle: tuple[x509.Certificate, ...] = (), insecure_bootstrap: bool = False) -> None:
        self._servers = servers
        self._trust_domain = trust_domain
        self._data_dir = data_dir
        self._attestor = node_attestor
        self._clock = clock
        self._rng = rng
        self._bootstrap = bootstrap_bundle
        self._insecure_bootstrap = insecure_bootstrap
        self._state: AgentState | None = None
        self._trust_changed = False

    @property
    def state(self) -> AgentState | None:
        """The identity in use (None before :meth:`start`)."""
        return self._state

    def actor(self) -> str:
        """Who the agent is, for audit records (join tokens masked)."""
        return display_id(self._state.spiffe_id) if self._state is not None else "agent"

    def _connect(self, state: AgentState) -> None:
        ctx = server_ssl_context(state.bundle, client_cert=(svid_path(self._data_dir), key_path(self._data_dir)))
        self._servers.connect(ctx)

    def _adopt(self, state: AgentState) -> None:
        save_state(self._data_dir, state)
        self._state = state
        self._connect(state)

    async def start(self) -> None:
        """Load the stored agent identity, or attest (trying each server while they are unreachable)."""
        stored = load_state(self._data_dir)
        if stored is not None and stored.not_after > self._clock.now():
            log.info("using stored agent identity %s", display_id(stored.spiffe_id))
            self._state = stored
            self._connect(stored)
            return
        attestor = self._attestor
        if attestor is None or (stored is not None and not attestor.reusable):
            what = "expired" if stored is not None else "no"
            raise AgentConfigError(f"agent: {what} stored identity and no node attestation evidence that can be used; "
                                   "give a new join token or configure a re-attestable node attestor (x509pop)")
        while True:
            try:
                await self._attest_and_adopt(attestor, stored)
                return
            except ServerCallError as err:
                if err.status not in FAILOVER_STATUSES:
                    raise
                failed = self._servers.current
                delay = self._servers.failed()
                log.warning("node attestation at %s failed, trying %s in %.1fs: %s", display_address(failed),
                            display_address(self._servers.current), delay, err)
                await asyncio.sleep(delay)

    async def _attest_and_adopt(self, attestor: NodeAttestorClient, previous: AgentState | None) -> None:
        state = await self._attest(attestor, previous)
        self._servers.succeeded()
        self._adopt(state)
        log.info("attested as %s (%s) at %s", display_id(state.spiffe_id), attestor.name,
                 display_address(self._servers.current))

    async def _attest(self, attestor: NodeAttestorClient, previous: AgentState | None) -> AgentState:
        # Re-attestation trusts the bundle it last had plus the bootstrap bundle; never insecurely.
        anchors = (*(previous.bundle if previous is not None else ()), *self._bootstrap)
        ctx = server_ssl_context(anchors, insecure=previous is None and self._insecure_bootstrap)
        client = self._servers.open(ctx)
        key = new_key()
        try:
            result = await client.attest(attestor, build_csr(key))
        finally:
            client.close()
        chain = self._check_agent_chain(result.svid_chain, key, None)
        bundle = bundle_from_proto(result.bundle)
        if bundle.trust_domain != self._trust_domain or not bundle.x509_authorities:
            raise ServerResponseError("attest: server returned a bundle for the wrong trust domain")
        return AgentState(leaf_spiffe_id(chain[0]), chain, key, bundle.x509_authorities, result.can_reattest)

    def _check_agent_chain(
        self, chain_der: Sequence[bytes], key: ec.EllipticCurvePrivateKey, expected: SpiffeId | None
    ) -> tuple[x509.Certificate, ...]:
        chain = load_chain(list(chain_der))
        sid = leaf_spiffe_id(chain[0])
        if chain[0].public_key() != key.public_key():
            raise ServerResponseError("attest: agent svid does not hold our key")
        if not sid.member_of(self._trust_domain) or (expected is not None and sid != expected):
            raise ServerResponseError(f"attest: unexpected agent spiffe id: {display_id(sid)!r}")
        return chain

    async def _renew(self, state: AgentState) -> None:
        key = new_key()
        chain_der = await self._servers.call(lambda client: client.renew(build_csr(key, state.spiffe_id)))
        chain = self._check_agent_chain(chain_der, key, state.spiffe_id)
        self._adopt(AgentState(state.spiffe_id, chain, key, state.bundle, state.can_reattest))
        log.info("renewed agent svid, valid until %s", chain[0].not_valid_after_utc)

    async def rotate_loop(self, tick: float) -> None:
        """Every ``tick`` seconds, renew the agent SVID if it is due (re-attest if it lapsed)."""
        while True:
            await asyncio.sleep(tick)
            state = self._state
            if state is None:
                continue
            now = self._clock.now()
            if not should_rotate(now=now, not_before=state.not_before, not_after=state.not_after,
                                 jitter=self._rng.uniform(-JITTER, JITTER)):
                continue
            attestor = self._attestor
            try:
                if state.not_after <= now and attestor is not None and attestor.reusable and state.can_reattest:
                    # The SVID lapsed (the server was out of reach past its TTL): renewal needs a valid
                    # SVID, re-attestation only the node's evidence.
                    await self._attest_and_adopt(attestor, state)
                else:
                    await self._renew(state)
            except (ServerCallError, ServerResponseError, NodeAttestationError) as err:
                SYNC_ERRORS.inc("renewal")
                log.warning("agent svid renewal failed: %s", err)

    def update_trust(self, authorities: tuple[x509.Certificate, ...]) -> None:
        """Store new server trust anchors; they apply from the next connection (:meth:`reconnect_if_trust_changed`)."""
        state = self._state
        if state is None or not authorities or set(authorities) == set(state.bundle):
            return
        new = AgentState(state.spiffe_id, state.chain, state.key, authorities, state.can_reattest)
        save_state(self._data_dir, new)
        self._state = new
        self._trust_changed = True

    def reconnect_if_trust_changed(self) -> None:
        """Reconnect with the trust anchors of :meth:`update_trust`, if they changed."""
        if self._trust_changed and self._state is not None:
            self._trust_changed = False
            self._connect(self._state)

    def forget(self) -> None:
        """Delete the stored identity (the server evicted the agent: the next start must attest again)."""
        clear_state(self._data_dir)
