"""Agent API protobuf messages to agent domain objects (pure).

Everything here handles server input, so it is validated and bounded::

    update = sync_update_from_proto(msg)      # SyncAuthorizedResponse -> SyncUpdate
    svid = issued_svid(entry, chain_der, key) # checks the leaf's SPIFFE ID
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Sequence
from datetime import timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from spiffe_agent.errors import AgentError
from spiffe_agent.manager.cache import Entry, IssuedSvid, SyncUpdate
from spiffe_py._proto.spiffepy.server.v1 import agent_pb2, types_pb2
from spiffe_py.bundle import SpiffeBundle
from spiffe_py.errors import SpiffeError
from spiffe_py.selectors import Selector
from spiffe_py.spiffeid import SpiffeId, TrustDomain

MAX_CHAIN_CERTS = 16


class ServerResponseError(AgentError):
    """The server sent something the agent cannot accept."""


def entry_from_proto(msg: types_pb2.Entry) -> Entry:
    """Convert one authorized entry."""
    try:
        return Entry(
            id=msg.id,
            spiffe_id=SpiffeId.parse(msg.spiffe_id),
            selectors=frozenset(Selector(s.type, s.value) for s in msg.selectors),
            hint=msg.hint,
            federates_with=tuple(TrustDomain.parse(td) for td in msg.federates_with),
            created_at=msg.created_at,
            revision=msg.revision,
            x509_svid_ttl=msg.x509_svid_ttl,
            jwt_svid_ttl=msg.jwt_svid_ttl,
            dns_names=tuple(msg.dns_names),
            labels=dict(msg.labels),  # request-time policy input
            quarantined=msg.quarantined,
            bind_to_process=msg.bind_to_process,
            expires_at=task_end(msg),
            x509_ttl_in_force=max(0, msg.x509_svid_ttl_in_force),
        )
    except SpiffeError as err:
        raise ServerResponseError(f"sync: server sent an invalid entry: {msg.id!r}") from err


def task_end(msg: types_pb2.Entry) -> int:
    """When the entry's task ends: the earlier of expires_at and created_at + max_lifetime (0 = never)."""
    ends = [msg.expires_at] if msg.expires_at > 0 else []
    if msg.max_lifetime > 0:
        ends.append(msg.created_at + msg.max_lifetime)
    return min(ends, default=0)


def _public_key(der: bytes) -> PublicKeyTypes:
    return serialization.load_der_public_key(der)


def bundle_from_proto(msg: types_pb2.Bundle) -> SpiffeBundle:
    """Convert a wire bundle into a SpiffeBundle."""
    try:
        return SpiffeBundle(
            trust_domain=TrustDomain.parse(msg.trust_domain),
            x509_authorities=tuple(x509.load_der_x509_certificate(d) for d in msg.x509_authorities),
            jwt_authorities={k.key_id: _public_key(k.public_key) for k in msg.jwt_authorities},
            sequence_number=msg.sequence_number or None,
            refresh_hint=timedelta(seconds=msg.refresh_hint) if msg.refresh_hint > 0 else None,
        )
    except (ValueError, SpiffeError) as err:
        raise ServerResponseError(f"sync: server sent an invalid bundle for {msg.trust_domain!r}") from err


def normalize_key_id(text: str) -> str:
    """Key ids compare as lowercase hex without separators."""
    return text.replace(":", "").lower()


def sync_update_from_proto(msg: agent_pb2.SyncAuthorizedResponse) -> SyncUpdate:
    """Convert one SyncAuthorized message."""
    federated = None
    if msg.full or msg.federated_bundles or msg.federated_bundles_set:
        federated = tuple(bundle_from_proto(b) for b in msg.federated_bundles)
    has_bundle = msg.HasField("bundle")
    return SyncUpdate(
        full=msg.full,
        full_messages=max(0, msg.full_messages) if msg.full else 0,
        entries=tuple(entry_from_proto(e) for e in msg.entries),
        removed_entry_ids=tuple(msg.removed_entry_ids),
        bundle=bundle_from_proto(msg.bundle) if has_bundle else None,
        federated_bundles=federated,
        revocations=tuple((r.kind, r.value) for r in msg.revocations),
        crls=tuple(msg.crls.crls) if msg.HasField("crls") else None,
        tainted_authorities=(
            frozenset(normalize_key_id(k) for k in msg.bundle.tainted_x509_authorities) if has_bundle else None
        ),
        tainted_jwt_keys=frozenset(k.key_id for k in msg.bundle.jwt_authorities if k.tainted) if has_bundle else None,
    )


def jws_key_id(token: str) -> str:
    """The ``kid`` of a compact JWS header ("" if absent or unreadable); no signature check."""
    header = token.split(".", 1)[0]
    try:
        doc = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except ValueError:
        return ""
    kid = doc.get("kid") if isinstance(doc, dict) else None
    return kid if isinstance(kid, str) else ""


def _key_ids(cert: x509.Certificate, *kinds: type[x509.AuthorityKeyIdentifier | x509.SubjectKeyIdentifier],
             ) -> set[str]:
    """The lowercase hex key ids of ``cert``'s extensions of ``kinds`` (AKI: its issuer's; SKI: its own)."""
    ids: set[str] = set()
    for kind in kinds:
        try:
            value = cert.extensions.get_extension_for_class(kind).value
        except x509.ExtensionNotFound:
            continue
        key_id = value.digest if isinstance(value, x509.SubjectKeyIdentifier) else value.key_identifier
        if key_id:
            ids.add(key_id.hex())
    return ids


@functools.lru_cache(maxsize=16)
def _above_leaf_ids(chain_der: tuple[bytes, ...]) -> frozenset[str]:
    """Key ids (SKI and AKI) of the CA certificates above a leaf: parsed once, as every SVID of one CA shares them."""
    ids: set[str] = set()
    for der in chain_der:
        ids |= _key_ids(_load(der), x509.AuthorityKeyIdentifier, x509.SubjectKeyIdentifier)
    return frozenset(ids)


def _checked_size(chain_der: Sequence[bytes]) -> None:
    if not chain_der or len(chain_der) > MAX_CHAIN_CERTS:
        raise ServerResponseError("svid: server sent an empty or oversized certificate chain")


def _load(der: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as err:
        raise ServerResponseError("svid: server sent a malformed certificate") from err


def load_chain(chain_der: Sequence[bytes]) -> tuple[x509.Certificate, ...]:
    """Parse a DER chain (leaf first) from the server."""
    _checked_size(chain_der)
    return tuple(_load(d) for d in chain_der)


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The certificate's URI and DNS SANs."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.UniformResourceIdentifier), san.get_values_for_type(x509.DNSName)


def leaf_spiffe_id(cert: x509.Certificate) -> SpiffeId:
    """The single URI SAN of a certificate as a SPIFFE ID."""
    uris, _ = _sans(cert)
    if len(uris) != 1:
        raise ServerResponseError(f"svid: certificate must carry exactly one uri san: {uris!r}")
    try:
        return SpiffeId.parse(uris[0])
    except SpiffeError as err:
        raise ServerResponseError("svid: certificate has no valid spiffe id") from err


def issued_svid(entry: Entry, chain_der: Sequence[bytes], key: ec.EllipticCurvePrivateKey) -> IssuedSvid:
    """Build an IssuedSvid after checking the leaf names the entry's ID and holds our key."""
    _checked_size(chain_der)
    leaf = _load(chain_der[0])
    uris, dns_names = _sans(leaf)
    # A SPIFFE ID parses only from its one canonical spelling: the SAN names it exactly when it is str(spiffe_id).
    if uris != [str(entry.spiffe_id)]:
        raise ServerResponseError(f"svid: server issued the wrong spiffe id for entry {entry.id!r}")
    if leaf.public_key() != key.public_key():
        raise ServerResponseError(f"svid: issued certificate does not match our key for entry {entry.id!r}")
    key_der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return IssuedSvid(
        entry_id=entry.id,
        spiffe_id=entry.spiffe_id,
        cert_chain=tuple(chain_der),
        key_der=key_der,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        serial=leaf.serial_number,
        authority_ids=frozenset(_key_ids(leaf, x509.AuthorityKeyIdentifier)) | _above_leaf_ids(tuple(chain_der[1:])),
        dns_names=tuple(dns_names),
        entry_version=entry.version,
    )
