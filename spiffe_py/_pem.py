"""PEM / DER helpers for certificates and private keys (private; callers wrap :class:`DecodeError`)::

certs = certificates_from_any(pem_or_concatenated_der)
key = private_key_from_any(pkcs8_pem_or_der)
pem = certificates_to_pem(certs)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

MAX_INPUT_BYTES = 4 * 1024 * 1024  # far above any sane chain/bundle; bounds work on hostile input
MAX_CERTIFICATES = 1000

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_PEM_LABEL = re.compile(rb"[A-Z0-9 ]{1,64}")
_PEM_START = b"-----BEGIN "


# Everything cryptography raises for a malformed certificate (some are not ValueErrors; TypeError: e.g. a
# name attribute of a type its OID may not have, raised when the subject is first read).
_CERT_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class DecodeError(ValueError):
    """Bytes were not the expected PEM/DER content; the message names the problem, never the data."""


def _bounded(data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("expected bytes")
    if len(data) > MAX_INPUT_BYTES:
        raise DecodeError(f"input is larger than {MAX_INPUT_BYTES} bytes")
    return bytes(data)


def is_pem(data: bytes) -> bool:
    """True if ``data`` looks like PEM text rather than DER."""
    return _PEM_START in data


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    """Decode every PEM block as ``(label, der)``; text between blocks is ignored (RFC 7468 §5.2).

    A linear scan (no backtracking regex), so hostile input cannot make it quadratic.
    """
    data = _bounded(data)
    blocks: list[tuple[str, bytes]] = []
    pos = 0
    while (start := data.find(_PEM_START, pos)) != -1:
        label_start = start + len(_PEM_START)
        label_end = data.find(b"-----", label_start)
        label = data[label_start:label_end] if label_end != -1 else b""
        if not _PEM_LABEL.fullmatch(label):
            raise DecodeError("malformed pem block")
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, label_end + 5)
        body = data[label_end + 5 : end]
        if end == -1 or _PEM_START in body:
            raise DecodeError("malformed pem block")
        try:
            blocks.append((label.decode(), base64.b64decode(b"".join(body.split()), validate=True)))
        except binascii.Error as err:
            raise DecodeError("invalid base64 in pem block") from err
        pos = end + len(end_marker)
    return blocks


def split_der(data: bytes) -> list[bytes]:
    """Split concatenated DER SEQUENCEs (a Workload API chain or bundle) into single objects."""
    data = _bounded(data)
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        end = offset + _der_length(data, offset)
        parts.append(data[offset:end])
        offset = end
        if len(parts) > MAX_CERTIFICATES:
            raise DecodeError(f"more than {MAX_CERTIFICATES} certificates")
    return parts


def _der_length(data: bytes, offset: int) -> int:
    """Total length of the DER SEQUENCE (tag + length + content) starting at ``offset``."""
    if offset + 2 > len(data) or data[offset] != 0x30:
        raise DecodeError("der data is not a sequence")
    first = data[offset + 1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or offset + 2 + count > len(data):
            raise DecodeError("der sequence has an invalid length")
        header, length = 2 + count, int.from_bytes(data[offset + 2 : offset + 2 + count], "big")
    if offset + header + length > len(data):
        raise DecodeError("der sequence is truncated")
    return header + length


def checked_certificate(cert: x509.Certificate) -> x509.Certificate:
    """``cert`` after touching every field we use: cryptography parses lazily, so accessors could raise later."""
    try:
        _ = (cert.subject, cert.issuer, cert.extensions, cert.not_valid_before_utc, cert.not_valid_after_utc)
        _ = (cert.public_key(), cert.signature_hash_algorithm)
    except _CERT_ERRORS as err:
        raise DecodeError("invalid certificate") from err
    if cert.serial_number <= 0:  # RFC 5280 §4.1.2.2
        raise DecodeError("certificate serial number must be positive")
    return cert


def _load_der_certificate(der: bytes) -> x509.Certificate:
    try:
        cert = x509.load_der_x509_certificate(der)
    except _CERT_ERRORS as err:
        raise DecodeError("invalid certificate") from err
    return checked_certificate(cert)


def certificates_from_pem(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM; any block other than CERTIFICATE is an error."""
    blocks = pem_blocks(data)
    if any(label != "CERTIFICATE" for label, _ in blocks):
        raise DecodeError("pem block is not a certificate")
    if len(blocks) > MAX_CERTIFICATES:
        raise DecodeError(f"more than {MAX_CERTIFICATES} certificates")
    return [_load_der_certificate(der) for _, der in blocks]


def certificates_from_der(data: bytes) -> list[x509.Certificate]:
    """Certificates from concatenated DER."""
    return [_load_der_certificate(der) for der in split_der(data)]


def certificates_from_any(data: bytes) -> list[x509.Certificate]:
    """Certificates from PEM or concatenated DER (detected)."""
    return certificates_from_pem(data) if is_pem(data) else certificates_from_der(data)


def certificates_to_pem(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated PEM CERTIFICATE blocks."""
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)


def certificates_to_der(certs: Iterable[x509.Certificate]) -> bytes:
    """Concatenated DER certificates."""
    return b"".join(cert.public_bytes(serialization.Encoding.DER) for cert in certs)


def private_key_from_any(data: bytes) -> SigningKey:
    """An unencrypted PKCS#8 EC or RSA private key from PEM (``PRIVATE KEY``) or DER."""
    data = _bounded(data)
    if is_pem(data):
        blocks = pem_blocks(data)
        if len(blocks) != 1 or blocks[0][0] != "PRIVATE KEY":
            raise DecodeError("expected exactly one pem block of type PRIVATE KEY (pkcs#8)")
        data = blocks[0][1]
    try:
        key: PrivateKeyTypes = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:  # TypeError: encrypted; or an unknown algorithm
        raise DecodeError("invalid or encrypted private key") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise DecodeError("unsupported private key type (want ec or rsa)")
    return key


def chain_and_key_from_pem(data: bytes) -> tuple[list[x509.Certificate], SigningKey]:
    """One PEM blob holding CERTIFICATE blocks (leaf first) and one PKCS#8 ``PRIVATE KEY``, in any order."""
    blocks = pem_blocks(data)
    unexpected = sorted({label for label, _ in blocks} - {"CERTIFICATE", "PRIVATE KEY"})
    if unexpected:
        raise DecodeError(f"unexpected pem block {unexpected[0]!r} (want CERTIFICATE and PRIVATE KEY)")
    keys = [der for label, der in blocks if label == "PRIVATE KEY"]
    certs = [der for label, der in blocks if label == "CERTIFICATE"]
    if len(keys) != 1:
        raise DecodeError("expected exactly one pem block of type PRIVATE KEY (pkcs#8)")
    if len(certs) > MAX_CERTIFICATES:
        raise DecodeError(f"more than {MAX_CERTIFICATES} certificates")
    return [_load_der_certificate(der) for der in certs], private_key_from_any(keys[0])


def private_key_to_der(key: SigningKey) -> bytes:
    """Unencrypted PKCS#8 DER."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_to_pem(key: SigningKey) -> bytes:
    """Unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
