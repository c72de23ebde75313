"""Revocation rules (pure): what an issued SVID's revocation looks like, pruning, and CRLs.

The server logs every SVID it signs (an :class:`Issuance`); revoking turns issuances into
:class:`Revocation` records kept until the SVID would have expired anyway. X.509 revocations
reach validators as one CRL per CA, signed by that CA::

    item = x509_issuance(leaf, entry_id=entry.id, agent_id=agent_id)
    revs = revocations_for([item], reason="incident 42", now=now)      # expired ones are skipped
    ders = build_crls(live(revs, now=now), signers, now=now, number=7)  # one DER CRL per issuing CA
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from spiffe_py.errors import SpiffeError
from spiffe_server.ca.keys import CaPrivateKey
from spiffe_server.ca.signer import X509Authority
from spiffe_server.datastore.models import Issuance, Revocation, RevocationKind

MAX_REASON = 256
MAX_JTI = 256
MAX_SERIAL_HEX = 40  # RFC 5280: at most 20 octets
CRL_VALIDITY = timedelta(hours=1)  # nextUpdate; the server re-signs at half-life and on every change
_HEX = re.compile(r"[0-9a-f]+")
_PRINTABLE = re.compile(r"[\x21-\x7e]+")


class RevocationRequestError(SpiffeError, ValueError):
    """A revocation request names a malformed serial, jti or reason."""


def serial_hex(serial: int) -> str:
    """The canonical form of a serial: lowercase hex without leading zeros."""
    return f"{serial:x}"


def parse_serial(text: str) -> str:
    """Canonical serial from user input (hex, optional ``0x`` and ``:`` separators, any case)."""
    value = text.strip().lower().removeprefix("0x").replace(":", "")
    if not value or len(value) > MAX_SERIAL_HEX or not _HEX.fullmatch(value):
        raise RevocationRequestError(f"revocation: serial must be 1..{MAX_SERIAL_HEX} hex digits, got {text!r}")
    canonical = value.lstrip("0")
    if not canonical:
        raise RevocationRequestError("revocation: serial must not be zero")
    return canonical


def check_jti(text: str) -> str:
    """A JWT ID from user input: 1..256 printable ASCII characters."""
    if not text or len(text) > MAX_JTI or not _PRINTABLE.fullmatch(text):
        raise RevocationRequestError(f"revocation: jti must be 1..{MAX_JTI} printable characters, got {text[:64]!r}")
    return text


def check_reason(text: str) -> str:
    """A revocation reason: at most 256 characters, no control characters."""
    if len(text) > MAX_REASON or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise RevocationRequestError(f"revocation: reason must be at most {MAX_REASON} characters without control "
                                     "characters")
    return text


def _issuer_of(leaf: x509.Certificate) -> str:
    try:
        aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        return ""
    return aki.key_identifier.hex() if aki.key_identifier else ""


def x509_issuance(leaf: x509.Certificate, *, spiffe_id: str, entry_id: str = "", agent_id: str = "") -> Issuance:
    """The issuance-log record of a signed X.509-SVID (issuer = the leaf's authority key ID)."""
    return Issuance(kind=RevocationKind.SERIAL, value=serial_hex(leaf.serial_number), spiffe_id=spiffe_id,
                    expires_at=leaf.not_valid_after_utc, entry_id=entry_id, agent_id=agent_id, issuer=_issuer_of(leaf))


def jwt_issuance(claims: Mapping[str, Any], *, entry_id: str = "", agent_id: str = "") -> Issuance:
    """The issuance-log record of a signed JWT-SVID, from its claims (``jti``, ``sub``, ``exp``)."""
    return Issuance(kind=RevocationKind.JTI, value=str(claims["jti"]), spiffe_id=str(claims["sub"]),
                    expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC), entry_id=entry_id,
                    agent_id=agent_id)


def revocations_for(issuances: Iterable[Issuance], *, reason: str, now: datetime) -> tuple[Revocation, ...]:
    """Revocations of the issued SVIDs that have not expired at ``now`` (expired ones need none)."""
    return tuple(Revocation(kind=i.kind, value=i.value, revoked_at=now, expires_at=i.expires_at,
                            entry_id=i.entry_id, agent_id=i.agent_id, reason=reason, spiffe_id=i.spiffe_id,
                            issuer=i.issuer)
                 for i in issuances if i.expires_at > now)


def live(revocations: Iterable[Revocation], *, now: datetime) -> tuple[Revocation, ...]:
    """Revocations still needed at ``now``: the SVID they name has not expired yet."""
    return tuple(r for r in revocations if r.expires_at > now)


def _hash_for(key: CaPrivateKey) -> hashes.SHA256 | hashes.SHA384:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def build_crl(signer: X509Authority, revoked: Sequence[Revocation], *, now: datetime, number: int,
              validity: timedelta = CRL_VALIDITY) -> x509.CertificateRevocationList:
    """A CRL signed by ``signer`` listing the revoked serials (RFC 5280 §5: AKI and CRL number)."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(signer.cert.subject)
               .last_update(now)
               .next_update(now + validity)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.key.public_key()),
                              critical=False)
               .add_extension(x509.CRLNumber(number), critical=False))
    for rev in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(rev.value, 16)).revocation_date(rev.revoked_at)
            .build())
    return builder.sign(signer.key, _hash_for(signer.key))


def build_crls(revocations: Iterable[Revocation], signers: Iterable[X509Authority], *, now: datetime,
               number: int) -> tuple[bytes, ...]:
    """DER CRLs, one per CA in ``signers`` that issued an unexpired revoked serial (ordered by CA)."""
    by_issuer: dict[str, list[Revocation]] = {}
    for rev in live(revocations, now=now):
        if rev.kind is RevocationKind.SERIAL:
            by_issuer.setdefault(rev.issuer, []).append(rev)
    out = []
    for signer in sorted(signers, key=lambda s: s.authority_id):
        revoked = sorted(by_issuer.get(signer.authority_id, ()), key=lambda r: r.value)
        if revoked:
            crl = build_crl(signer, revoked, now=now, number=number)
            out.append(crl.public_bytes(serialization.Encoding.DER))
    return tuple(out)


def crls_to_pem(ders: Iterable[bytes]) -> bytes:
    """DER CRLs as concatenated PEM blocks."""
    return b"".join(x509.load_der_x509_crl(d).public_bytes(serialization.Encoding.PEM) for d in ders)
