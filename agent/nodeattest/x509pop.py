"""x509pop: the agent proves possession of the key of a node certificate issued by a CA the server trusts.

Table: ``cert_file`` (PEM, leaf first, then any intermediates) and ``key_file`` (PEM private key,
EC or RSA). The payload is the DER chain; each challenge is answered with
:func:`spiffe_py._x509pop.x509pop_respond`. The evidence stays valid as long as the certificate,
so an agent whose SVID expired re-attests by itself. The server names the agent
``spiffe://<td>/spire/agent/x509pop/<sha1 fingerprint of the leaf>``, as SPIRE does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from spiffe_agent.errors import AgentConfigError, NodeAttestationError
from spiffe_agent.nodeattest.base import config_str
from spiffe_py import _pem
from spiffe_py._x509pop import x509pop_respond
from spiffe_py.errors import SpiffeError

NAME = "x509pop"


@dataclass(frozen=True, slots=True)
class X509PopClient:
    """Sends the certificate chain and signs the server's nonces with the certificate's key."""

    chain: tuple[x509.Certificate, ...]
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = field(repr=False)
    name: str = NAME
    reusable: bool = True

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> X509PopClient:
        """Read ``cert_file`` and ``key_file``; the key must belong to the leaf."""
        cert_file = Path(config_str(table, NAME, "cert_file"))
        key_file = Path(config_str(table, NAME, "key_file"))
        try:
            chain = tuple(_pem.certificates_from_pem(cert_file.read_bytes()))
            key = load_pem_private_key(key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError, _pem.DecodeError) as err:
            raise AgentConfigError(f"config: x509pop certificate or key unreadable: {err}") from err
        if not chain:
            raise AgentConfigError(f"config: x509pop cert_file holds no certificate: {str(cert_file)!r}")
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise AgentConfigError("config: x509pop key must be an EC or RSA private key")
        if key.public_key() != chain[0].public_key():
            raise AgentConfigError("config: x509pop key_file does not hold the key of the certificate in cert_file")
        return cls(chain=chain, key=key)

    def payload(self) -> bytes:
        """The DER chain, leaf first, concatenated."""
        return b"".join(cert.public_bytes(Encoding.DER) for cert in self.chain)

    def answer(self, challenge: bytes) -> bytes:
        """A signature over the server's nonce."""
        try:
            return x509pop_respond(challenge, self.key)
        except SpiffeError as err:
            raise NodeAttestationError(f"x509pop: cannot answer the challenge: {err}") from err
