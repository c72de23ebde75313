"""Minimal DER building for the fuzzers: wrap an edited to-be-signed body and sign it again.

Editing the TBS part of a CSR or certificate and re-signing it yields inputs whose signature
verifies, so the fuzzers reach the code that runs after the signature check, as a real attacker
holding their own key can.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier ecdsa-with-SHA256


def length(n: int) -> bytes:
    """DER length octets."""
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element."""
    return bytes([tag]) + length(len(body)) + body


def signed(tbs: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """SEQUENCE { tbs, ecdsa-with-SHA256, BIT STRING signature } (the CSR and certificate shape)."""
    signature = key.sign(tbs, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, tbs + ECDSA_SHA256 + tlv(0x03, b"\x00" + signature))
