"""Pure conversions between datastore records and SQL rows.

    row = entry_row(entry)                        # column name -> SQL value
    entry = entry_from_row(rows[0])               # rows selected with ENTRY_COLUMNS
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from spiffe_py.selectors import Selector
from spiffe_server.datastore.errors import InvalidArgumentError
from spiffe_server.datastore.models import (
    AttestedAgent,
    AuditCheckpoint,
    AuditRecord,
    Issuance,
    RegistrationEntry,
    Revocation,
    RevocationKind,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

ENTRY_COLUMNS = (
    "id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl", "dns_names", "hint", "admin",
    "downstream", "federates_with", "expires_at", "revision", "created_at", "labels", "bind_to_process",
    "max_lifetime", "jwt_claims", "quarantined",
)
AGENT_COLUMNS = (
    "spiffe_id", "attestation_type", "serial", "expires_at", "banned", "can_reattest", "selectors", "created_at",
    "updated_at", "new_serial", "new_expires_at",
)
REVOCATION_COLUMNS = ("kind", "value", "entry_id", "agent_id", "reason", "revoked_at", "expires_at", "spiffe_id",
                      "issuer")
ISSUANCE_COLUMNS = ("kind", "value", "spiffe_id", "entry_id", "agent_id", "issuer", "expires_at")
AUDIT_COLUMNS = ("seq", "time", "record", "prev_hash", "hash", "spiffe_id", "decision")
CHECKPOINT_COLUMNS = ("seq", "hash", "time", "signature")

Row = Sequence[Any]


def to_micros(when: datetime) -> int:
    """Unix microseconds of a tz-aware datetime."""
    return (when - _EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    """UTC datetime from Unix microseconds."""
    return _EPOCH + timedelta(microseconds=int(value))


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _selectors_json(selectors: Sequence[Selector]) -> str:
    return _json([[s.type, s.value] for s in selectors])


def _selectors(text: str) -> tuple[Selector, ...]:
    return tuple(Selector(kind, value) for kind, value in json.loads(text))


def _digest(value: object) -> str:
    return hashlib.sha256(_json(value).encode()).hexdigest()


def selector_key(selectors: Sequence[Selector]) -> str:
    """Digest of a (normalised) selector set, for exact-match lookups."""
    return _digest([[s.type, s.value] for s in selectors])


def token_hash(token: str) -> str:
    """Digest under which a join token is stored, so a database leak does not leak unused tokens."""
    return hashlib.sha256(token.encode()).hexdigest()


def entry_row(entry: RegistrationEntry) -> dict[str, object]:
    """The ``entries`` row of an entry, including its uniqueness keys."""
    return {
        "id": entry.id,
        "spiffe_id": entry.spiffe_id,
        "parent_id": entry.parent_id,
        # SPIRE's duplicate rule: same parent, SPIFFE ID and exact selector set.
        "identity_key": _digest([entry.parent_id, entry.spiffe_id, [[s.type, s.value] for s in entry.selectors]]),
        "selector_key": selector_key(entry.selectors),
        "selectors": _selectors_json(entry.selectors),
        "x509_svid_ttl": entry.x509_svid_ttl,
        "jwt_svid_ttl": entry.jwt_svid_ttl,
        "dns_names": _json(list(entry.dns_names)),
        "hint": entry.hint,
        "admin": entry.admin,
        "downstream": entry.downstream,
        "federates_with": _json(list(entry.federates_with)),
        "expires_at": None if entry.expires_at is None else to_micros(entry.expires_at),
        "revision": entry.revision,
        "created_at": to_micros(entry.created_at),
        "labels": _json(dict(entry.labels)),
        "bind_to_process": entry.bind_to_process,
        "max_lifetime": entry.max_lifetime,
        "jwt_claims": _json(dict(entry.jwt_claims)),
        "quarantined": entry.quarantined,
    }


def entry_from_row(row: Row) -> RegistrationEntry:
    """An entry from a row selected with ENTRY_COLUMNS."""
    col: Mapping[str, Any] = dict(zip(ENTRY_COLUMNS, row, strict=True))
    return RegistrationEntry(
        id=col["id"],
        spiffe_id=col["spiffe_id"],
        parent_id=col["parent_id"],
        selectors=_selectors(col["selectors"]),
        x509_svid_ttl=int(col["x509_svid_ttl"]),
        jwt_svid_ttl=int(col["jwt_svid_ttl"]),
        dns_names=tuple(json.loads(col["dns_names"])),
        hint=col["hint"],
        admin=bool(col["admin"]),
        downstream=bool(col["downstream"]),
        federates_with=tuple(json.loads(col["federates_with"])),
        expires_at=None if col["expires_at"] is None else from_micros(col["expires_at"]),
        revision=int(col["revision"]),
        created_at=from_micros(col["created_at"]),
        labels=json.loads(col["labels"]),
        bind_to_process=bool(col["bind_to_process"]),
        max_lifetime=int(col["max_lifetime"]),
        jwt_claims=json.loads(col["jwt_claims"]),
        quarantined=bool(col["quarantined"]),
    )


def agent_row(agent: AttestedAgent) -> dict[str, object]:
    """The ``agents`` row of an agent."""
    return {
        "spiffe_id": agent.spiffe_id,
        "attestation_type": agent.attestation_type,
        "serial": agent.serial,
        "expires_at": to_micros(agent.expires_at),
        "banned": agent.banned,
        "can_reattest": agent.can_reattest,
        "selectors": _selectors_json(agent.selectors),
        "created_at": to_micros(agent.created_at),
        "updated_at": to_micros(agent.updated_at),
        "new_serial": agent.new_serial,
        "new_expires_at": None if agent.new_expires_at is None else to_micros(agent.new_expires_at),
    }


def agent_from_row(row: Row) -> AttestedAgent:
    """An agent from a row selected with AGENT_COLUMNS."""
    col: Mapping[str, Any] = dict(zip(AGENT_COLUMNS, row, strict=True))
    return AttestedAgent(
        spiffe_id=col["spiffe_id"],
        attestation_type=col["attestation_type"],
        serial=col["serial"],
        expires_at=from_micros(col["expires_at"]),
        banned=bool(col["banned"]),
        can_reattest=bool(col["can_reattest"]),
        selectors=_selectors(col["selectors"]),
        created_at=from_micros(col["created_at"]),
        updated_at=from_micros(col["updated_at"]),
        new_serial=col["new_serial"],
        new_expires_at=None if col["new_expires_at"] is None else from_micros(col["new_expires_at"]),
    )


def revocation_row(rev: Revocation) -> dict[str, object]:
    """The ``revocations`` row of a revocation."""
    return {
        "kind": rev.kind.value,
        "value": rev.value,
        "entry_id": rev.entry_id,
        "agent_id": rev.agent_id,
        "reason": rev.reason,
        "revoked_at": to_micros(rev.revoked_at),
        "expires_at": to_micros(rev.expires_at),
        "spiffe_id": rev.spiffe_id,
        "issuer": rev.issuer,
    }


def revocation_from_row(row: Row) -> Revocation:
    """A revocation from a row selected with REVOCATION_COLUMNS."""
    kind, value, entry_id, agent_id, reason, revoked_at, expires_at, spiffe_id, issuer = row
    return Revocation(kind=RevocationKind(kind), value=value, entry_id=entry_id, agent_id=agent_id, reason=reason,
                      revoked_at=from_micros(revoked_at), expires_at=from_micros(expires_at), spiffe_id=spiffe_id,
                      issuer=issuer)


_REVOCATION_TAG = "rev1"  # versions the token, and tells it apart from other listings' tokens
_REVOCATION_KINDS = frozenset(k.value for k in RevocationKind)


def revocation_token(rev: Revocation) -> str:
    """The opaque page token that resumes a revocation listing after ``rev`` (unpadded base64url)."""
    raw = f"{_REVOCATION_TAG}:{rev.kind.value}:{rev.value}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def revocation_token_key(token: str) -> tuple[str, str]:
    """The (kind, value) key a :func:`revocation_token` resumes after.

    Raises:
        InvalidArgumentError: ``token`` is not one this listing hands out (malformed or altered).
    """
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        tag, kind, value = raw.decode("utf-8").split(":", 2)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgumentError("page_token", "not a token of this listing") from None
    canonical = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") == token
    if not canonical or tag != _REVOCATION_TAG or kind not in _REVOCATION_KINDS or not value or "\x00" in value:
        raise InvalidArgumentError("page_token", "not a token of this listing")
    return kind, value


def issuance_row(item: Issuance) -> dict[str, object]:
    """The ``issuances`` row of an issued SVID."""
    return {"kind": item.kind.value, "value": item.value, "spiffe_id": item.spiffe_id, "entry_id": item.entry_id,
            "agent_id": item.agent_id, "issuer": item.issuer, "expires_at": to_micros(item.expires_at)}


def issuance_from_row(row: Row) -> Issuance:
    """An issuance from a row selected with ISSUANCE_COLUMNS."""
    kind, value, spiffe_id, entry_id, agent_id, issuer, expires_at = row
    return Issuance(kind=RevocationKind(kind), value=value, spiffe_id=spiffe_id, entry_id=entry_id,
                    agent_id=agent_id, issuer=issuer, expires_at=from_micros(expires_at))


def audit_row(record: AuditRecord) -> dict[str, object]:
    """The ``audit`` row of a record."""
    return {
        "seq": record.seq,
        "time": to_micros(record.time),
        "record": record.record,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
        "spiffe_id": record.spiffe_id,
        "decision": record.decision,
    }


def audit_from_row(row: Row) -> AuditRecord:
    """An audit record from a row selected with AUDIT_COLUMNS."""
    seq, time, record, prev_hash, hash_, spiffe_id, decision = row
    return AuditRecord(seq=int(seq), time=from_micros(time), record=record, prev_hash=prev_hash, hash=hash_,
                       spiffe_id=spiffe_id, decision=decision)


def checkpoint_row(cp: AuditCheckpoint) -> dict[str, object]:
    """The ``audit_checkpoints`` row of a checkpoint."""
    return {"seq": cp.seq, "hash": cp.hash, "time": to_micros(cp.time), "signature": cp.signature}


def checkpoint_from_row(row: Row) -> AuditCheckpoint:
    """A checkpoint from a row selected with CHECKPOINT_COLUMNS."""
    seq, hash_, time, signature = row
    return AuditCheckpoint(seq=int(seq), hash=hash_, time=from_micros(time), signature=signature)
