"""DER assembly of X.509-SVID leaves: the per-leaf part of signing, with everything else encoded once.

Every leaf one CA signs with one subject shares its signature algorithm, issuer, subject and
all extensions but the SAN and the SKI. ``CertificateBuilder`` rebuilds and re-encodes all of
that per leaf, and the API layer then re-encodes the parsed certificate for the wire. Here a
:class:`LeafProfile` holds those shared parts as DER, built once from cryptography's own
encodings (``Name.public_bytes``, ``ExtensionType.public_bytes``); a leaf adds its serial,
validity, SubjectPublicKeyInfo, SAN and SKI; :mod:`spiffe_server.ca.signer` signs the TBS::

    profile = LeafProfile.build(issuer=ca_cert, ca_key=ca_key, subject=subject, extensions=exts)
    tbs = profile.tbs(serial=serial, not_before=nb, not_after=na, public_key=pub, san=san)
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

from spiffe_py._der import BIT_STRING, CRITICAL, OCTET_STRING, SEQUENCE, der_extension, der_integer, der_oid, tlv
from spiffe_server.ca.keys import CaPrivateKey
from spiffe_server.ca.templates import CertPublicKey

_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_EXTENSIONS_TAG = 0xA3  # [3] EXPLICIT, constructed
_VERSION_V3 = bytes.fromhex("a003020102")  # [0] EXPLICIT INTEGER 2
_NULL = bytes.fromhex("0500")
_SKI_OID = x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER
_SAN_OID = x509.oid.ExtensionOID.SUBJECT_ALTERNATIVE_NAME
_UTC_TIME_END = 2050  # RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050

_SIGNATURE_OIDS = {
    ("ec", "sha256"): "1.2.840.10045.4.3.2",  # ecdsa-with-SHA256
    ("ec", "sha384"): "1.2.840.10045.4.3.3",  # ecdsa-with-SHA384
    ("rsa", "sha256"): "1.2.840.113549.1.1.11",  # sha256WithRSAEncryption
    ("rsa", "sha384"): "1.2.840.113549.1.1.12",  # sha384WithRSAEncryption
}


_SKI_OID_DER = der_oid(_SKI_OID.dotted_string)
_SAN_OID_DER = der_oid(_SAN_OID.dotted_string)


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


def signature_hash(key: CaPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The hash a CA key signs with: SHA-384 for EC keys above 256 bits, else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def signature_algorithm(key: CaPrivateKey) -> bytes:
    """The AlgorithmIdentifier a CA key signs with (RSA carries NULL parameters, ECDSA none)."""
    family = "rsa" if isinstance(key, rsa.RSAPrivateKey) else "ec"
    oid = der_oid(_SIGNATURE_OIDS[(family, signature_hash(key).name)])
    return tlv(SEQUENCE, oid + (_NULL if family == "rsa" else b""))


def spki_and_key_id(public_key: CertPublicKey) -> tuple[bytes, bytes]:
    """The SubjectPublicKeyInfo DER and its RFC 5280 §4.2.1.2 method-1 key ID (SHA-1 of the key bits)."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return spki, hashlib.sha1(_subject_public_key_bits(spki), usedforsecurity=False).digest()


def _subject_public_key_bits(spki: bytes) -> bytes:
    """The BIT STRING contents (after the unused-bits octet) of a DER SubjectPublicKeyInfo."""
    _, body = _read(spki, 0, SEQUENCE)
    offset, _ = _read(spki, body, SEQUENCE)  # algorithm
    _, bits = _read(spki, offset, BIT_STRING)
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
    """The DER every leaf of one (CA key, issuer, subject, extensions) shares.

    The SAN (the entry's SPIFFE ID and DNS names) and the SKI (the leaf's key) are per leaf; the
    other extensions are encoded once, in ``static``, around them: ``static[0]``, first per-leaf
    extension, ``static[1]``, second, ``static[2]``, in the order given to :meth:`build`.
    """

    algorithm: bytes  # AlgorithmIdentifier, in the TBS and after it
    issuer: bytes  # issuer Name
    subject: bytes  # subject Name
    static: tuple[bytes, bytes, bytes]  # Extension elements before, between and after the per-leaf two
    san_first: bool  # the SAN comes before the SKI
    san_critical: bool

    @classmethod
    def build(cls, *, issuer: x509.Name, ca_key: CaPrivateKey, subject: x509.Name,
              extensions: Sequence[x509.Extension[x509.ExtensionType]]) -> LeafProfile:
        """A profile for ``extensions`` in order: exactly one non-critical SKI and one SAN (values ignored)."""
        ski = [i for i, ext in enumerate(extensions) if ext.oid == _SKI_OID]
        san = [i for i, ext in enumerate(extensions) if ext.oid == _SAN_OID]
        if len(ski) != 1 or extensions[ski[0]].critical:
            raise ValueError("leafder: extensions must hold exactly one non-critical subject key identifier")
        if len(san) != 1:
            raise ValueError("leafder: extensions must hold exactly one subject alternative name")
        first, second = sorted((ski[0], san[0]))
        encoded = [der_extension(ext) for ext in extensions]
        return cls(algorithm=signature_algorithm(ca_key), issuer=issuer.public_bytes(), subject=subject.public_bytes(),
                   static=(b"".join(encoded[:first]), b"".join(encoded[first + 1:second]),
                           b"".join(encoded[second + 1:])),
                   san_first=san[0] < ski[0], san_critical=extensions[san[0]].critical)

    def tbs(self, *, serial: int, not_before: datetime, not_after: datetime, public_key: CertPublicKey,
            san: x509.SubjectAlternativeName) -> bytes:
        """The TBSCertificate DER of one leaf."""
        spki, key_id = spki_and_key_id(public_key)
        ski = tlv(SEQUENCE, _SKI_OID_DER + tlv(OCTET_STRING, tlv(OCTET_STRING, key_id)))
        names = tlv(SEQUENCE, _SAN_OID_DER + (CRITICAL if self.san_critical else b"")
                    + tlv(OCTET_STRING, san.public_bytes()))
        first, second = (names, ski) if self.san_first else (ski, names)
        extensions = tlv(SEQUENCE, b"".join((self.static[0], first, self.static[1], second, self.static[2])))
        return tlv(SEQUENCE, b"".join((
            _VERSION_V3, der_integer(serial), self.algorithm, self.issuer,
            tlv(SEQUENCE, der_time(not_before) + der_time(not_after)), self.subject, spki,
            tlv(_EXTENSIONS_TAG, extensions))))

    def certificate(self, tbs: bytes, signature: bytes) -> bytes:
        """The DER certificate from a TBS of this profile and the CA's signature over it."""
        return tlv(SEQUENCE, tbs + self.algorithm + tlv(BIT_STRING, b"\x00" + signature))
