"""Proto ⇄ domain conversions for the server APIs (pure; validation names the field).

::

    entry = entry_from_proto(req.entry, trust_domain=td, now=now)   # raises RequestError
    reply = entry_to_proto(store.create_entry(entry))
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from spiffe_py import _jwk, _pem
from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import SpiffeError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.errors import RequestError
from spiffe_server.ca.templates import RESERVED_JWT_CLAIMS
from spiffe_server.datastore.models import AttestedAgent, RegistrationEntry
from spiffe_server.dnsnames import DnsNameError, check_dns_name

MAX_AUDIENCES = 32
MAX_AUDIENCE_LEN = 256
MAX_HINT_BYTES = 1024  # SPIFFE Workload API: hints longer than 1024 bytes are not supported
MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime holds
# C0 and C1 control characters and DEL: never in a value an operator's terminal may print
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def jwt_claims_of(token: str) -> dict[str, Any]:
    """The claims of a JWT the server just signed (no verification: we made it)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def ts(when: datetime | None) -> int:
    """Unix seconds (0 for None)."""
    return 0 if when is None else int(when.timestamp())


def from_ts(seconds: int) -> datetime | None:
    """The datetime for Unix seconds (None for 0)."""
    return None if seconds == 0 else datetime.fromtimestamp(seconds, UTC)


def parse_member_id(value: str, field: str, trust_domain: TrustDomain) -> SpiffeId:
    """Parse a SPIFFE ID that must belong to our trust domain."""
    if not value:
        raise RequestError(field, "required")
    try:
        sid = SpiffeId.parse(value)
    except SpiffeError as err:
        raise RequestError(field, str(err)) from err
    if not sid.member_of(trust_domain):
        raise RequestError(field, f"must belong to trust domain {trust_domain.name!r}: {value!r}")
    return sid


def parse_workload_id(value: str, field: str, trust_domain: TrustDomain) -> SpiffeId:
    """A SPIFFE ID we may issue to a workload: in our trust domain, not root, not under ``/spire/``."""
    sid = parse_member_id(value, field, trust_domain)
    if sid.is_root or sid.path == "/spire" or sid.path.startswith("/spire/"):
        raise RequestError(field, f"is reserved for the server and agents: {value!r}")
    return sid


def parse_selectors(items: Iterable[types_pb2.Selector], field: str) -> tuple[Selector, ...]:
    """Proto selectors to domain selectors; each needs a type and a value."""
    out = []
    for item in items:
        try:
            out.append(Selector(item.type, item.value))
        except SpiffeError as err:
            raise RequestError(field, f"{err}: {item.type!r}:{item.value!r}") from err
    return tuple(out)


def parse_label_filter(items: Iterable[str], field: str = "labels") -> tuple[dict[str, str], tuple[str, ...]]:
    """``key=value`` (that value) and ``key`` (any value) filters: ({key: value}, keys); a key is required."""
    values: dict[str, str] = {}
    keys: list[str] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not key.strip():
            raise RequestError(field, f"{item[:80]!r} is not key or key=value")
        if sep:
            values[key.strip()] = value.strip()
        else:
            keys.append(key.strip())
    return values, tuple(keys)


def check_unix_seconds(value: int, field: str) -> int:
    """Unix seconds a datetime can hold: 0 (unset) up to the end of year 9999."""
    if not 0 <= value <= MAX_UNIX_SECONDS:
        raise RequestError(field, f"must be Unix seconds within 0..{MAX_UNIX_SECONDS}, got {value}")
    return value


def check_hint(value: str, field: str) -> str:
    """An entry hint: at most 1024 UTF-8 bytes, no control characters."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_HINT_BYTES:
        raise RequestError(field, f"must be at most {MAX_HINT_BYTES} bytes, got {size}")
    if _CONTROL.search(value):
        raise RequestError(field, "must not contain control characters")
    return value


def check_dns_names(values: Iterable[str], field: str) -> tuple[str, ...]:
    """DNS SANs: LDH labels, IDNA A-labels, a wildcard only as the whole left-most label."""
    try:
        return tuple(check_dns_name(v) for v in values)
    except DnsNameError as err:
        raise RequestError(field, str(err)) from None


def check_ttl(value: int, field: str) -> int:
    """A TTL in seconds: 0 (default) or positive."""
    if value < 0:
        raise RequestError(field, f"must not be negative, got {value}")
    return value


def _trust_domains(names: Iterable[str], field: str) -> tuple[str, ...]:
    out = []
    for name in names:
        try:
            out.append(TrustDomain.parse(name).name)
        except SpiffeError as err:
            raise RequestError(field, str(err)) from err
    return tuple(out)


def entry_from_proto(pb: types_pb2.Entry, *, trust_domain: TrustDomain, now: datetime) -> RegistrationEntry:
    """Validate a requested entry; ``now`` becomes ``created_at`` (the store keeps the original on update)."""
    spiffe_id = parse_workload_id(pb.spiffe_id, "entry.spiffe_id", trust_domain)
    parent_id = parse_member_id(pb.parent_id, "entry.parent_id", trust_domain)
    if spiffe_id == parent_id:
        raise RequestError("entry.spiffe_id", "must differ from entry.parent_id")
    selectors = parse_selectors(pb.selectors, "entry.selectors")
    if not selectors:
        raise RequestError("entry.selectors", "at least one selector is required")
    if pb.expires_at < 0:
        raise RequestError("entry.expires_at", f"must not be negative, got {pb.expires_at}")
    check_unix_seconds(pb.expires_at, "entry.expires_at")
    if pb.expires_at and pb.expires_at <= now.timestamp():
        raise RequestError("entry.expires_at", f"is in the past: {pb.expires_at}")  # the task already ended
    reserved = RESERVED_JWT_CLAIMS.intersection(pb.jwt_claims)
    if reserved:
        raise RequestError("entry.jwt_claims", f"reserved claims cannot be set: {sorted(reserved)!r}")
    return RegistrationEntry(
        id=pb.id, spiffe_id=str(spiffe_id), parent_id=str(parent_id), selectors=selectors, created_at=now,
        x509_svid_ttl=check_ttl(pb.x509_svid_ttl, "entry.x509_svid_ttl"),
        jwt_svid_ttl=check_ttl(pb.jwt_svid_ttl, "entry.jwt_svid_ttl"),
        dns_names=check_dns_names(pb.dns_names, "entry.dns_names"), hint=check_hint(pb.hint, "entry.hint"),
        admin=pb.admin, downstream=pb.downstream,
        federates_with=_trust_domains(pb.federates_with, "entry.federates_with"),
        expires_at=from_ts(pb.expires_at), labels=dict(pb.labels), bind_to_process=pb.bind_to_process,
        max_lifetime=check_ttl(pb.max_lifetime, "entry.max_lifetime"), jwt_claims=dict(pb.jwt_claims),
        quarantined=pb.quarantined,
    )


def selectors_to_proto(selectors: Iterable[Selector]) -> list[types_pb2.Selector]:
    """Domain selectors to proto."""
    return [types_pb2.Selector(type=s.type, value=s.value) for s in selectors]


def entry_to_proto(entry: RegistrationEntry) -> types_pb2.Entry:
    """A stored entry on the wire."""
    return types_pb2.Entry(
        id=entry.id, spiffe_id=entry.spiffe_id, parent_id=entry.parent_id,
        selectors=selectors_to_proto(entry.selectors), x509_svid_ttl=entry.x509_svid_ttl,
        jwt_svid_ttl=entry.jwt_svid_ttl, dns_names=entry.dns_names, hint=entry.hint, admin=entry.admin,
        downstream=entry.downstream, federates_with=entry.federates_with, expires_at=ts(entry.expires_at),
        revision=entry.revision, created_at=ts(entry.created_at), labels=dict(entry.labels),
        bind_to_process=entry.bind_to_process, max_lifetime=entry.max_lifetime, jwt_claims=dict(entry.jwt_claims),
        quarantined=entry.quarantined,
    )


def agent_to_proto(agent: AttestedAgent) -> types_pb2.Agent:
    """A stored agent on the wire."""
    return types_pb2.Agent(
        spiffe_id=agent.spiffe_id, attestation_type=agent.attestation_type, serial=agent.serial,
        expires_at=ts(agent.expires_at), banned=agent.banned, selectors=selectors_to_proto(agent.selectors),
        can_reattest=agent.can_reattest, created_at=ts(agent.created_at),
        new_serial=agent.new_serial, new_expires_at=ts(agent.new_expires_at),
    )


def certs_to_der(certs: Iterable[x509.Certificate]) -> list[bytes]:
    """DER encodings, in order."""
    return [c.public_bytes(serialization.Encoding.DER) for c in certs]


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def bundle_to_proto(bundle: SpiffeBundle) -> types_pb2.Bundle:
    """A SPIFFE bundle in the spiffe-py wire form."""
    return types_pb2.Bundle(
        trust_domain=bundle.trust_domain.name,
        x509_authorities=certs_to_der(bundle.x509_authorities),
        jwt_authorities=[types_pb2.JwtKey(key_id=kid, public_key=_spki(key))
                         for kid, key in bundle.jwt_authorities.items()],
        sequence_number=bundle.sequence_number or 0,
        refresh_hint=int(bundle.refresh_hint.total_seconds()) if bundle.refresh_hint else 0,
    )


def _x509_authority(der: bytes, field: str) -> x509.Certificate:
    """One DER CA certificate, fully decoded, whose key a SPIFFE bundle (JWKS) can carry."""
    try:
        certs = _pem.certificates_from_der(der)
    except _pem.DecodeError as err:
        raise RequestError(field, "not a DER certificate") from err
    if len(certs) != 1:
        raise RequestError(field, "each item must hold exactly one DER certificate")
    try:
        _jwk.key_to_jwk(certs[0].public_key())
    except (TypeError, ValueError) as err:  # e.g. Ed25519 or a curve JOSE does not define
        raise RequestError(field, "certificate key must be ec p-256/p-384/p-521 or rsa") from err
    return certs[0]


def bundle_from_proto(pb: types_pb2.Bundle, field: str = "bundle") -> SpiffeBundle:
    """Parse a wire bundle; every certificate and key must parse."""
    try:
        td = TrustDomain.parse(pb.trust_domain)
    except SpiffeError as err:
        raise RequestError(f"{field}.trust_domain", str(err)) from err
    certs = tuple(_x509_authority(der, f"{field}.x509_authorities") for der in pb.x509_authorities)
    keys = {}
    for jwk in pb.jwt_authorities:
        if not jwk.key_id:
            raise RequestError(f"{field}.jwt_authorities.key_id", "required")
        try:
            keys[jwk.key_id] = serialization.load_der_public_key(jwk.public_key)
        except ValueError as err:
            raise RequestError(f"{field}.jwt_authorities", f"key {jwk.key_id!r} is not a DER public key") from err
    try:
        return SpiffeBundle(td, certs, keys, pb.sequence_number or None,
                            timedelta(seconds=pb.refresh_hint) if pb.refresh_hint > 0 else None)
    except (TypeError, ValueError) as err:
        raise RequestError(field, str(err)) from err
