"""DER assembly of X.509-SVID leaves: the per-leaf part of signing, with everything else encoded once.

Every leaf one CA signs for one registration entry shares its signature algorithm, issuer,
subject and all extensions but the SKI. ``CertificateBuilder`` rebuilds and re-encodes all of
that per leaf, and the API layer then re-encodes the parsed certificate for the wire. Here a
:class:`LeafProfile` holds those shared parts as DER, built once from cryptography's own
encodings (``Name.public_bytes``, ``ExtensionType.public_bytes``); a leaf adds its serial,
validity, SubjectPublicKeyInfo and SKI; :mod:`spiffe_server.ca.signer` signs the TBS::

    profile = LeafProfile.build(issuer=ca_cert, ca_key=ca_key, subject=subject, extensions=exts)
    tbs = profile.tbs(serial=serial, not_before=nb, not_after=na, public_key=pub)
    der = profile.certificate(tbs, signature)

``tests/unit/server/ca/test_leafder.py`` checks, over generated inputs, that the
TBSCertificate is byte-identical to the one ``CertificateBuilder`` encodes for the same
values. Pure: no I/O, no clock, no signing (the key only selects the algorithm).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spiffe_server.ca.keys import CaPrivateKey
from spiffe_server.ca.templates import CertPublicKey

_SEQUENCE = 0x30
_INTEGER = 0x02
_BIT_STRING = 0x03
_OCTET_STRING = 0x04
_OID = 0x06
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT, constructed
_VERSION_V3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
_CRITICAL = bytes.fromhex("0101ff")  # BOOLEAN TRUE (FALSE is the DEFAULT, so it is omitted)
_NULL = bytes.fromhex("0500")
_SKI_OID = x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER
_UTC_TIME_END = 2050  # RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050

_SIGNATURE_OIDS = {
    ("ec", "sha256"): "1.2.840.10045.4.3.2",  # ecdsa-with-SHA256
    ("ec", "sha384"): "1.2.840.10045.4.3.3",  # ecdsa-with-SHA384
    ("rsa", "sha256"): "1.2.840.113549.1.1.11",  # sha256WithRSAEncryption
    ("rsa", "sha384"): "1.2.840.113549.1.1.12",  # sha384WithRSAEncryption
}


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def der_integer(value: int) -> bytes:
    """A non-negative INTEGER in minimal two's complement (a leading 0 byte when the top bit is set)."""
    if value < 0:
        raise ValueError("leafder: only non-negative integers are encoded")
    return tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


@functools.lru_cache(maxsize=64)
def der_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form (a leaf uses the same few OIDs: each is encoded once)."""
    arcs = [int(part) for part in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"leafder: not an object identifier: {dotted!r}")
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return tlv(_OID, bytes(body))


_SKI_OID_DER = der_oid(_SKI_OID.dotted_string)


def der_time(moment: datetime) -> bytes:
    """A certificate validity time, to the second (sub-seconds are dropped, as CertificateBuilder does)."""
    return _der_time_at(math.floor(moment.timestamp()))


@functools.lru_cache(maxsize=256)
def _der_time_at(seconds: int) -> bytes:
    # Leaves signed within the same second share both times: encode each second once.
    utc = datetime.fromtimestamp(seconds, UTC)
    if utc.year < _UTC_TIME_END:
        return tlv(_UTC_TIME, utc.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    return tlv(_GENERALIZED_TIME, utc.strftime("%Y%m%d%H%M%SZ").encode("ascii"))


def der_extension(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    """One Extension: OID, the critical flag when set, and the value's DER in an OCTET STRING."""
    flag = _CRITICAL if ext.critical else b""
    return tlv(_SEQUENCE, der_oid(ext.oid.dotted_string) + flag + tlv(_OCTET_STRING, ext.value.public_bytes()))


def signature_hash(key: CaPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The hash a CA key signs with: SHA-384 for EC keys above 256 bits, else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def signature_algorithm(key: CaPrivateKey) -> bytes:
    """The AlgorithmIdentifier a CA key signs with (RSA carries NULL parameters, ECDSA none)."""
    family = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
    oid = der_oid(_SIGNATURE_OIDS[(family, signature_hash(key).name)])
    return tlv(_SEQUENCE, oid + (_NULL if family == "rsa" else b""))


def spki_and_key_id(public_key: CertPublicKey) -> tuple[bytes, bytes]:
    """The SubjectPublicKeyInfo DER and its RFC 5280 §4.2.1.2 method-1 key ID (SHA-1 of the key bits)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki, hashlib.sha1(_subject_public_key_bits(spki), usedforsecurity=False).digest()


def _subject_public_key_bits(spki: bytes) -> bytes:
    """The BIT STRING contents (after the unused-bits octet) of a DER SubjectPublicKeyInfo."""
    _, body = _read(spki, 0, _SEQUENCE)
    offset, _ = _read(spki, body, _SEQUENCE)  # algorithm
    _, bits = _read(spki, offset, _BIT_STRING)
    if spki[bits] != 0:
        raise ValueError("leafder: public key bit string has unused bits")
    return spki[bits + 1:]


def _read(der: bytes, offset: int, tag: int) -> tuple[int, int]:
    """(offset after the element, offset of its content) for the element at ``offset`` with ``tag``."""
    if der[offset] != tag:
        raise ValueError(f"leafder: expected tag {tag:#x} at {offset}, found {der[offset]:#x}")
    size = der[offset + 1]
    start = offset + 2
    if size & 0x80:
        count = size & 0x7F
        size = int.from_bytes(der[start:start + count], "big")
        start += count
    return start + size, start


@dataclass(frozen=True, slots=True)
class LeafProfile:
    """The DER every leaf of one (CA key, issuer, subject, extensions) shares; the SKI goes at ``ski_index``."""

    algorithm: bytes  # AlgorithmIdentifier, in the TBS and after it
    issuer: bytes  # issuer Name
    subject: bytes  # subject Name
    extensions_before: bytes  # Extension elements before the SKI
    extensions_after: bytes  # ... and after it

    @classmethod
    def build(cls, *, issuer: x509.Name, ca_key: CaPrivateKey, subject: x509.Name,
              extensions: Sequence[x509.Extension[x509.ExtensionType]]) -> LeafProfile:
        """A profile for ``extensions`` in order; exactly one must be the SKI (its value is per leaf)."""
        at = [i for i, ext in enumerate(extensions) if ext.oid == _SKI_OID]
        if len(at) != 1 or extensions[at[0]].critical:
            raise ValueError("leafder: extensions must hold exactly one non-critical subject key identifier")
        encoded = [der_extension(ext) for ext in extensions]
        return cls(algorithm=signature_algorithm(ca_key), issuer=issuer.public_bytes(), subject=subject.public_bytes(),
                   extensions_before=b"".join(encoded[:at[0]]), extensions_after=b"".join(encoded[at[0] + 1:]))

    def tbs(self, *, serial: int, not_before: datetime, not_after: datetime, public_key: CertPublicKey) -> bytes:
        """The TBSCertificate DER of one leaf."""
        spki, key_id = spki_and_key_id(public_key)
        ski = tlv(_SEQUENCE, _SKI_OID_DER + tlv(_OCTET_STRING, tlv(_OCTET_STRING, key_id)))
        extensions = tlv(_SEQUENCE, self.extensions_before + ski + self.extensions_after)
        return tlv(_SEQUENCE, b"".join((
            _VERSION_V3, der_integer(serial), self.algorithm, self.issuer,
            tlv(_SEQUENCE, der_time(not_before) + der_time(not_after)), self.subject, spki,
            tlv(_EXTENSIONS_TAG, extensions))))

    def certificate(self, tbs: bytes, signature: bytes) -> bytes:
        """The DER certificate from a TBS of this profile and the CA's signature over it."""
        return tlv(_SEQUENCE, tbs + self.algorithm + tlv(_BIT_STRING, b"\x00" + signature))
