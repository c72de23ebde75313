"""x509pop proof of possession, shared by the agent (answers) and the server (checks).

The server sends a random 32-byte nonce; the agent signs ``b"spiffe-py x509pop v1\\0" + nonce``
with the key of its certificate: ECDSA with SHA-256 for EC keys, RSA-PSS (MGF1-SHA-256, salt =
digest length) with SHA-256 for RSA keys. The prefix keeps the key from signing arbitrary data::

    answer = x509pop_respond(nonce, agent_key)                     # agent
    verify_x509pop_response(nonce, answer, leaf.public_key())     # server; VerificationError if wrong
"""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from spiffe_py.errors import VerificationError

NONCE_BYTES = 32
MAX_RESPONSE_BYTES = 1024  # an RSA-4096 signature is 512 bytes
_DOMAIN = b"spiffe-py x509pop v1\x00"
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)


def new_nonce() -> bytes:
    """A fresh random challenge."""
    return secrets.token_bytes(NONCE_BYTES)


def _message(nonce: bytes) -> bytes:
    if len(nonce) != NONCE_BYTES:
        raise VerificationError(f"x509pop: challenge must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return _DOMAIN + nonce


def x509pop_respond(challenge: bytes, private_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """The agent's answer to ``challenge``: a signature with its certificate's key."""
    message = _message(challenge)
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(message, _PSS, hashes.SHA256())
    return private_key.sign(message, ec.ECDSA(hashes.SHA256()))


def verify_x509pop_response(challenge: bytes, response: bytes, public_key: CertificatePublicKeyTypes) -> None:
    """Check that ``response`` proves possession of ``public_key``'s private key."""
    message = _message(challenge)
    if len(response) > MAX_RESPONSE_BYTES:
        raise VerificationError(f"x509pop: challenge response is larger than {MAX_RESPONSE_BYTES} bytes")
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(response, message, _PSS, hashes.SHA256())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(response, message, ec.ECDSA(hashes.SHA256()))
        else:
            raise VerificationError("x509pop: certificate key must be ec or rsa")
    except InvalidSignature:
        raise VerificationError("x509pop: challenge response does not prove possession of the key") from None
