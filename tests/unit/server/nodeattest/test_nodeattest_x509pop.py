"""x509pop node attestor: chain verification, proof of possession, agent ID and selectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from grpclib.const import Status

from spiffe_py import _pem
from spiffe_py._x509pop import NONCE_BYTES, verify_x509pop_response, x509pop_respond
from spiffe_py.errors import VerificationError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.errors import status_for
from spiffe_server.errors import AttestationError
from spiffe_server.nodeattest.x509pop import X509PopAttestor
from tests.support.ca import CA, Issued, PrivateKey, generate_key

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
TD = TrustDomain.parse("example.org")
NODE_SUBJECT = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-1")])


def node_cert(ca: CA, **options: object) -> Issued:
    """A node certificate from an external PKI: CN subject, a DNS SAN, no SPIFFE ID."""
    defaults: dict[str, object] = {"uris": [], "dns_names": ["node-1.internal"], "subject": NODE_SUBJECT,
                                   "serial": 0x0A0B0C}
    return ca.issue_svid("unused", **{**defaults, **options})  # type: ignore[arg-type]


class Responder:
    """Plays the agent: answers each challenge with a given key and records what it saw."""

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        self.challenges: list[bytes] = []

    async def __call__(self, challenge: bytes) -> bytes:
        self.challenges.append(challenge)
        return x509pop_respond(challenge, self.key)


def sha1(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex()


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
async def test_attest_accepts_possession_of_certified_key(key_type: str) -> None:
    root = CA.create("node-pki.example", now=NOW)
    mid = root.child_ca()
    node = node_cert(mid, key_type=key_type)
    responder = Responder(node.key)
    result = await X509PopAttestor(TD, [root.cert]).attest(node.chain_der(), responder, now=NOW)

    assert result.agent_id == SpiffeId.parse(f"spiffe://example.org/spire/agent/x509pop/{sha1(node.leaf)}")
    assert result.can_reattest is True
    assert set(result.selectors) == {
        Selector("x509pop", "subject:cn:node-1"),
        Selector("x509pop", "san:dns:node-1.internal"),
        Selector("x509pop", f"ca:fingerprint:{sha1(mid.cert)}"),
        Selector("x509pop", f"ca:fingerprint:{sha1(root.cert)}"),
        Selector("x509pop", "serialnumber:0a0b0c"),
    }
    assert len(responder.challenges) == 1 and len(responder.challenges[0]) == NONCE_BYTES


async def test_attest_adds_uri_san_selector() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root, uris=["https://nodes.example/n1"], dns_names=[])
    result = await X509PopAttestor(TD, [root.cert]).attest(node.chain_der(), Responder(node.key), now=NOW)
    assert Selector("x509pop", "san:uri:https://nodes.example/n1") in result.selectors


async def test_attest_nonces_differ_between_attempts() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root)
    responder = Responder(node.key)
    attestor = X509PopAttestor(TD, [root.cert])
    await attestor.attest(node.chain_der(), responder, now=NOW)
    await attestor.attest(node.chain_der(), responder, now=NOW)
    assert responder.challenges[0] != responder.challenges[1]


async def test_attest_refuses_wrong_key() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root)
    with pytest.raises(AttestationError) as info:
        await X509PopAttestor(TD, [root.cert]).attest(node.chain_der(), Responder(generate_key()), now=NOW)
    assert str(info.value) == "x509pop: challenge response does not prove possession of the certificate key"
    assert status_for(info.value) is Status.PERMISSION_DENIED


async def test_attest_refuses_garbage_and_oversized_responses() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root)
    attestor = X509PopAttestor(TD, [root.cert])

    async def garbage(_: bytes) -> bytes:
        return b"\x00" * 64

    async def huge(_: bytes) -> bytes:
        return b"\x00" * 100_000

    for answer in (garbage, huge):
        with pytest.raises(AttestationError, match="does not prove possession"):
            await attestor.attest(node.chain_der(), answer, now=NOW)


async def test_attest_refuses_chain_from_untrusted_ca() -> None:
    trusted = CA.create("node-pki.example", now=NOW)
    other = CA.create("node-pki.example", now=NOW)
    node = node_cert(other)
    responder = Responder(node.key)
    with pytest.raises(AttestationError, match=r"^x509pop: certificate chain does not verify against the ca bundle"):
        await X509PopAttestor(TD, [trusted.cert]).attest(node.chain_der(), responder, now=NOW)
    assert responder.challenges == []  # no challenge for an unverified chain


async def test_attest_refuses_expired_certificate() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root)  # valid for one hour
    with pytest.raises(AttestationError, match="does not verify"):
        await X509PopAttestor(TD, [root.cert]).attest(node.chain_der(), Responder(node.key),
                                                      now=NOW + timedelta(hours=2))


async def test_attest_refuses_missing_intermediate() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root.child_ca())
    with pytest.raises(AttestationError, match="does not verify"):
        await X509PopAttestor(TD, [root.cert]).attest(node.leaf.public_bytes(Encoding.DER),
                                                      Responder(node.key), now=NOW)


@pytest.mark.parametrize(("payload", "message"), [
    (b"", r"must hold 1\.\.5 certificates"),
    (b"not der", "certificate chain is malformed"),
    (b"\x30\x03\x02\x01\x01", "certificate chain is malformed"),
    (b"\x30" * 70_000, "larger than 65536 bytes"),
])
async def test_attest_refuses_malformed_payload(payload: bytes, message: str) -> None:
    root = CA.create("node-pki.example", now=NOW)
    with pytest.raises(AttestationError, match=message):
        await X509PopAttestor(TD, [root.cert]).attest(payload, Responder(generate_key()), now=NOW)


async def test_attest_refuses_too_many_intermediates() -> None:
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root.child_ca().child_ca())
    with pytest.raises(AttestationError, match=r"must hold 1\.\.2 certificates"):
        await X509PopAttestor(TD, [root.cert], max_intermediates=1).attest(
            node.chain_der(), Responder(node.key), now=NOW)


async def test_load_reads_pem_bundle(tmp_path: Path) -> None:
    root = CA.create("node-pki.example", now=NOW)
    path = tmp_path / "ca.pem"
    path.write_bytes(_pem.certificates_to_pem([root.cert]))
    node = node_cert(root)
    result = await X509PopAttestor.load(TD, path).attest(node.chain_der(), Responder(node.key), now=NOW)
    assert result.agent_id.path == f"/spire/agent/x509pop/{sha1(node.leaf)}"


def test_load_rejects_file_without_certificates(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(b"nothing here")
    with pytest.raises(ValueError, match="ca bundle is empty"):
        X509PopAttestor.load(TD, path)


def test_respond_refuses_challenge_of_wrong_length() -> None:
    with pytest.raises(VerificationError, match=r"^x509pop: challenge must be 32 bytes, got 5$"):
        x509pop_respond(b"short", generate_key())


def test_response_is_bound_to_the_nonce() -> None:
    key = generate_key("rsa-2048")
    answer = x509pop_respond(b"a" * NONCE_BYTES, key)
    verify_x509pop_response(b"a" * NONCE_BYTES, answer, key.public_key())
    with pytest.raises(VerificationError, match="does not prove possession"):
        verify_x509pop_response(b"b" * NONCE_BYTES, answer, key.public_key())


@pytest.mark.parametrize(("usage", "message"), [
    (None, "has no key usage extension; it needs digitalSignature"),
    (x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=True, data_encipherment=False,
                   key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
                   decipher_only=False), "key usage lacks digitalSignature"),
])
async def test_attest_refuses_node_certificate_not_certified_for_signatures(usage: x509.KeyUsage | None,
                                                                            message: str) -> None:
    """A key the node PKI certified only for encryption (or for nothing stated) must not sign the x509pop proof."""
    root = CA.create("node-pki.example", now=NOW)
    node = node_cert(root, key_usage=usage)
    responder = Responder(node.key)
    with pytest.raises(AttestationError, match=message):
        await X509PopAttestor(TD, [root.cert]).attest(node.chain_der(), responder, now=NOW)
    assert responder.challenges == []  # refused before any challenge
