"""DER primitives for the few structures the server and agent assemble themselves (private).

The server encodes leaf certificates (spiffe_server.ca.leafder) and the agent its CSRs
(spiffe_agent.manager.identity) from these, with cryptography's encodings for names and
extension values; their tests prove the output byte-identical to cryptography's builders.
"""

from __future__ import annotations

import functools

from cryptography import x509

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
OID = 0x06
CRITICAL = bytes.fromhex("0101ff")  # BOOLEAN TRUE (FALSE is the DEFAULT, so it is omitted)


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
        raise ValueError("der: only non-negative integers are encoded")
    return tlv(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


@functools.lru_cache(maxsize=64)
def der_oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER from its dotted form (the same few OIDs recur: each is encoded once)."""
    arcs = [int(part) for part in dotted.split(".")]
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"der: not an object identifier: {dotted!r}")
    body = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def der_extension(ext: x509.Extension[x509.ExtensionType]) -> bytes:
    """One Extension: OID, the critical flag when set, and the value's DER in an OCTET STRING."""
    flag = CRITICAL if ext.critical else b""
    return tlv(SEQUENCE, der_oid(ext.oid.dotted_string) + flag + tlv(OCTET_STRING, ext.value.public_bytes()))
