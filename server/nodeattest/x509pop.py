"""The x509pop node attestor: the agent proves possession of a key certified by an external CA.

Payload: the agent's DER certificate chain, leaf first (concatenated). The server checks the chain
against ``ca_bundle`` at ``now``, sends a nonce, and checks the answer (see ``spiffe_py._x509pop``)::

    attestor = X509PopAttestor.load(td, Path("/etc/spiffe/node-ca.pem"))
    result = await attestor.attest(chain_der, challenge, now=clock.now())
    # spiffe://td/spire/agent/x509pop/<sha1 of leaf>; x509pop:subject:cn:..., x509pop:ca:fingerprint:...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from spiffe_py import _pem
from spiffe_py._x509pop import new_nonce, verify_x509pop_response
from spiffe_py.errors import SpiffeError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.errors import AttestationError
from spiffe_server.nodeattest.base import AttestResult, ChallengeFn, PluginHost, agent_id, string_key

NAME = "x509pop"
MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_MAX_INTERMEDIATES = 4
# External node certificates often lack a SAN; webpki's client profile would demand one.
_EE_POLICY = ExtensionPolicy.webpki_defaults_ee().may_be_present(
    x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)


def _fail(reason: str) -> AttestationError:
    return AttestationError(NAME, reason)


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-1 of the DER certificate (SPIRE's x509pop fingerprint)."""
    return cert.fingerprint(hashes.SHA1()).hex()  # noqa: S303 - an identifier, not a security hash


class X509PopAttestor:
    """Attests agents holding a certificate (and its key) issued under ``ca_bundle``."""

    name = NAME

    def __init__(self, trust_domain: TrustDomain, ca_bundle: Sequence[x509.Certificate], *,
                 max_intermediates: int = DEFAULT_MAX_INTERMEDIATES) -> None:
        if not ca_bundle:
            raise ValueError("x509pop: ca bundle is empty")
        self._trust_domain = trust_domain
        self._store = Store(list(ca_bundle))
        self._max_intermediates = max_intermediates

    @classmethod
    def load(cls, trust_domain: TrustDomain, ca_bundle_path: Path, *,
             max_intermediates: int = DEFAULT_MAX_INTERMEDIATES) -> X509PopAttestor:
        """Read the trusted CA certificates from a PEM file."""
        try:
            roots = _pem.certificates_from_pem(ca_bundle_path.read_bytes())
        except _pem.DecodeError as err:
            raise ValueError(f"x509pop: ca bundle {str(ca_bundle_path)!r}: {err}") from err
        return cls(trust_domain, roots, max_intermediates=max_intermediates)

    async def attest(self, payload: bytes, challenge: ChallengeFn, *, now: datetime) -> AttestResult:
        """Verify the chain, challenge the agent, and derive its ID and selectors."""
        leaf, *intermediates = self._parse(payload)
        chain = self._verify(leaf, intermediates, now)
        check_signing_usage(leaf)
        nonce = new_nonce()
        response = await challenge(nonce)
        try:
            verify_x509pop_response(nonce, response, leaf.public_key())
        except SpiffeError as err:
            raise _fail("challenge response does not prove possession of the certificate key") from err
        return AttestResult(agent_id=agent_id(self._trust_domain, NAME, fingerprint(leaf)),
                            selectors=build_selectors(chain), can_reattest=True)

    def _parse(self, payload: bytes) -> list[x509.Certificate]:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise _fail(f"certificate chain is larger than {MAX_PAYLOAD_BYTES} bytes")
        try:
            certs = _pem.certificates_from_der(payload)
        except _pem.DecodeError as err:
            raise _fail(f"certificate chain is malformed: {err}") from err
        if not certs or len(certs) > 1 + self._max_intermediates:
            raise _fail(f"certificate chain must hold 1..{1 + self._max_intermediates} certificates")
        return certs

    def _verify(self, leaf: x509.Certificate, intermediates: list[x509.Certificate],
                now: datetime) -> list[x509.Certificate]:
        verifier = (
            PolicyBuilder().store(self._store).time(now).max_chain_depth(self._max_intermediates + 1)
            .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=_EE_POLICY)
            .build_client_verifier()
        )
        try:
            return verifier.verify(leaf, intermediates).chain
        except VerificationError as err:
            raise _fail(f"certificate chain does not verify against the ca bundle: {err}") from err


def check_signing_usage(leaf: x509.Certificate) -> None:
    """Refuse a node certificate whose key is not certified for signatures: the proof is a signature."""
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise _fail("node certificate has no key usage extension; it needs digitalSignature") from None
    if not usage.digital_signature:
        raise _fail("node certificate key usage lacks digitalSignature")


def build_selectors(chain: Sequence[x509.Certificate]) -> tuple[Selector, ...]:
    """SPIRE's x509pop selectors for a verified chain (leaf first, root last)."""
    leaf = chain[0]
    values = [f"subject:cn:{attr.value!s}" for attr in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    values += [f"ca:fingerprint:{fingerprint(ca)}" for ca in chain[1:]]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    values += [f"san:dns:{name}" for name in san.get_values_for_type(x509.DNSName)]
    values += [f"san:uri:{uri}" for uri in san.get_values_for_type(x509.UniformResourceIdentifier)]
    serial = leaf.serial_number
    values.append(f"serialnumber:{serial.to_bytes((serial.bit_length() + 7) // 8 or 1, 'big').hex()}")
    return tuple(Selector(NAME, value) for value in sorted(set(values)))


@dataclass(frozen=True, slots=True)
class X509PopConfig:
    """``[node_attestors.x509pop]``: ``ca_bundle_path``, the PEM CAs that issue node certificates."""

    ca_bundle_path: Path


def parse_config(table: Mapping[str, Any]) -> X509PopConfig:
    """The plugin table."""
    return X509PopConfig(Path(string_key(table, "ca_bundle_path", known=frozenset({"ca_bundle_path"}))))


def build(config: X509PopConfig, host: PluginHost) -> X509PopAttestor:
    """The attestor, trusting the CAs in ``ca_bundle_path``."""
    return X509PopAttestor.load(host.trust_domain, config.ca_bundle_path)
