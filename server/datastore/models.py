"""Records kept by the server datastore (frozen values, validated on construction).

Every bound the store enforces is checked here, so an API handler that builds a
record from a request gets an :class:`InvalidArgumentError` naming the field::

    entry = RegistrationEntry(
        spiffe_id="spiffe://example.org/web",
        parent_id="spiffe://example.org/spire/agent/join_token/abc",
        selectors=(Selector.parse("unix:uid:1000"),),
        created_at=now,
    )
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Generic, NamedTuple, TypeVar

from spiffe_py.selectors import Selector
from spiffe_server.datastore.errors import InvalidArgumentError

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_SELECTORS = 64
MAX_DNS_NAMES = 32
MAX_LABELS = 64
MAX_FEDERATES_WITH = 64
MAX_JWT_CLAIMS = 64
MAX_STRING_BYTES = 2048
MAX_IDS_PER_QUERY = 1000
MAX_BUNDLE_BYTES = 1 << 20
MAX_JOURNAL_BYTES = 4 << 20
MAX_AUDIT_RECORD_BYTES = 64 << 10
MAX_REVOCATIONS = 100_000
MAX_ISSUANCES_PER_QUERY = 100_000
MAX_SECONDS = 2**31 - 1

T = TypeVar("T")


def check_str(name: str, value: str, *, required: bool = False, limit: int = MAX_STRING_BYTES) -> None:
    """Raise InvalidArgumentError unless ``value`` is a str of at most ``limit`` UTF-8 bytes without NUL."""
    if not isinstance(value, str):
        raise InvalidArgumentError(name, f"must be a string, got {type(value).__name__}")
    if required and not value:
        raise InvalidArgumentError(name, "must not be empty")
    if "\x00" in value:
        raise InvalidArgumentError(name, "must not contain NUL")
    if len(value.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidArgumentError(name, f"must be at most {limit} bytes")


def check_count(name: str, items: tuple[object, ...] | Mapping[str, str], limit: int) -> None:
    """Raise InvalidArgumentError if there are more than ``limit`` items."""
    if len(items) > limit:
        raise InvalidArgumentError(name, f"at most {limit} allowed, got {len(items)}")


def check_int(name: str, value: int, *, low: int = 0, high: int = MAX_SECONDS) -> None:
    """Raise InvalidArgumentError unless ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(name, f"must be an integer in [{low}, {high}], got {value!r}")


def check_time(name: str, value: datetime | None) -> None:
    """Raise InvalidArgumentError unless ``value`` is None or a tz-aware datetime."""
    if value is not None and (not isinstance(value, datetime) or value.utcoffset() is None):
        raise InvalidArgumentError(name, "must be a timezone-aware datetime")


def _strings(name: str, values: Iterable[str], limit: int) -> tuple[str, ...]:
    items = tuple(values)
    check_count(name, items, limit)
    for item in items:
        check_str(name, item, required=True)
    return items


def _mapping(name: str, values: Mapping[str, str], limit: int) -> Mapping[str, str]:
    items = dict(sorted(dict(values).items()))
    check_count(name, items, limit)
    for key, value in items.items():
        check_str(name, key, required=True)
        check_str(name, value)
    return MappingProxyType(items)


def normalize_selectors(name: str, values: Iterable[Selector], *, required: bool) -> tuple[Selector, ...]:
    """Sorted, de-duplicated selectors within the bound; raises InvalidArgumentError."""
    items = tuple(values)
    for item in items:
        if not isinstance(item, Selector):
            raise InvalidArgumentError(name, f"must contain Selector values, got {type(item).__name__}")
    result = tuple(sorted(set(items)))
    check_count(name, result, MAX_SELECTORS)
    if required and not result:
        raise InvalidArgumentError(name, "at least one selector is required")
    return result


def _set(obj: object, name: str, value: object) -> None:
    # Normalisation inside a frozen dataclass's __post_init__.
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationEntry:
    """A registration entry; ``id`` empty means "let the store generate one"."""

    spiffe_id: str
    parent_id: str
    selectors: tuple[Selector, ...]
    created_at: datetime
    id: str = ""
    x509_svid_ttl: int = 0
    jwt_svid_ttl: int = 0
    dns_names: tuple[str, ...] = ()
    hint: str = ""
    admin: bool = False
    downstream: bool = False
    federates_with: tuple[str, ...] = ()
    expires_at: datetime | None = None
    revision: int = 0
    labels: Mapping[str, str] = field(default_factory=dict)
    bind_to_process: bool = False
    max_lifetime: int = 0
    jwt_claims: Mapping[str, str] = field(default_factory=dict)
    quarantined: bool = False

    def __post_init__(self) -> None:
        check_str("id", self.id)
        check_str("spiffe_id", self.spiffe_id, required=True)
        check_str("parent_id", self.parent_id, required=True)
        check_str("hint", self.hint)
        _set(self, "selectors", normalize_selectors("selectors", self.selectors, required=True))
        _set(self, "dns_names", _strings("dns_names", self.dns_names, MAX_DNS_NAMES))
        _set(self, "federates_with", tuple(sorted(set(_strings("federates_with", self.federates_with,
                                                                MAX_FEDERATES_WITH)))))
        _set(self, "labels", _mapping("labels", self.labels, MAX_LABELS))
        _set(self, "jwt_claims", _mapping("jwt_claims", self.jwt_claims, MAX_JWT_CLAIMS))
        for name in ("x509_svid_ttl", "jwt_svid_ttl", "max_lifetime"):
            check_int(name, getattr(self, name))
        check_int("revision", self.revision, high=2**62)
        check_time("created_at", self.created_at)
        check_time("expires_at", self.expires_at)

    def as_stored(self, *, entry_id: str, revision: int, created_at: datetime) -> RegistrationEntry:
        """This entry with the store's bookkeeping fields set; only those are checked again.

        ``dataclasses.replace`` would run every field's normalisation again (a large part of a
        batch write): the other fields are unchanged, so already valid.
        """
        check_str("id", entry_id, required=True)
        check_int("revision", revision, high=2**62)
        check_time("created_at", created_at)
        stored = object.__new__(RegistrationEntry)
        for name in self.__slots__:
            _set(stored, name, getattr(self, name))
        for name, value in (("id", entry_id), ("revision", revision), ("created_at", created_at)):
            _set(stored, name, value)
        return stored


@dataclass(frozen=True, slots=True, kw_only=True)
class AttestedAgent:
    """A node agent that completed attestation.

    ``serial``/``expires_at`` describe the agent SVID the agent currently uses; ``new_serial``/
    ``new_expires_at`` the one the last RenewAgent issued and the agent has not presented yet
    (both empty when none is pending). The server accepts either; the first call made with the
    new one promotes it (SPIRE's CertSerialNumber / NewCertSerialNumber).
    """

    spiffe_id: str
    attestation_type: str
    serial: str
    expires_at: datetime
    created_at: datetime
    updated_at: datetime
    banned: bool = False
    selectors: tuple[Selector, ...] = ()
    can_reattest: bool = False
    new_serial: str = ""
    new_expires_at: datetime | None = None

    def __post_init__(self) -> None:
        check_str("spiffe_id", self.spiffe_id, required=True)
        check_str("attestation_type", self.attestation_type, required=True)
        check_str("serial", self.serial)
        check_str("new_serial", self.new_serial)
        _set(self, "selectors", normalize_selectors("selectors", self.selectors, required=False))
        for name in ("expires_at", "created_at", "updated_at"):
            check_time(name, getattr(self, name))
        if bool(self.new_serial) != (self.new_expires_at is not None):
            raise InvalidArgumentError("new_expires_at", "must be set exactly when new_serial is")
        if self.new_expires_at is not None:
            check_time("new_expires_at", self.new_expires_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinToken:
    """A single-use join token; ``spiffe_id`` is the optional alias the agent will get."""

    token: str = field(repr=False)  # a secret until used: never in logs
    expires_at: datetime
    spiffe_id: str | None = None

    def __post_init__(self) -> None:
        check_str("token", self.token, required=True)
        check_time("expires_at", self.expires_at)
        if self.spiffe_id is not None:
            check_str("spiffe_id", self.spiffe_id, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class FederationRecord:
    """A stored federation relationship: where a foreign trust domain's bundle is fetched from.

    ``last_refresh`` and ``last_error`` are the refresher's bookkeeping (None / '' until the
    first fetch); the other fields are the operator's.
    """

    trust_domain: str
    bundle_endpoint_url: str
    bundle_endpoint_profile: str
    endpoint_spiffe_id: str = ""
    created_at: datetime
    last_refresh: datetime | None = None
    last_error: str = ""

    def __post_init__(self) -> None:
        check_str("trust_domain", self.trust_domain, required=True)
        check_str("bundle_endpoint_url", self.bundle_endpoint_url, required=True)
        check_str("bundle_endpoint_profile", self.bundle_endpoint_profile, required=True)
        check_str("endpoint_spiffe_id", self.endpoint_spiffe_id)
        check_time("created_at", self.created_at)
        check_time("last_refresh", self.last_refresh)
        check_str("last_error", self.last_error)


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleRecord:
    """A trust domain's bundle as opaque SPIFFE bundle JSON."""

    trust_domain: str
    data: bytes = field(repr=False)
    sequence: int = 0

    def __post_init__(self) -> None:
        check_str("trust_domain", self.trust_domain, required=True)
        if not isinstance(self.data, bytes) or len(self.data) > MAX_BUNDLE_BYTES:
            raise InvalidArgumentError("data", f"must be bytes of at most {MAX_BUNDLE_BYTES} bytes")
        check_int("sequence", self.sequence, high=2**62)


class RevocationKind(enum.Enum):
    """What a revocation names: an X.509 serial number or a JWT ``jti``."""

    SERIAL = "serial"
    JTI = "jti"


@dataclass(frozen=True, slots=True, kw_only=True)
class Revocation:
    """A revoked credential, kept until the credential itself would have expired."""

    kind: RevocationKind
    value: str
    revoked_at: datetime
    expires_at: datetime
    entry_id: str = ""
    agent_id: str = ""
    reason: str = ""
    spiffe_id: str = ""
    issuer: str = ""  # hex SKI of the signing X.509 CA (whose CRL lists the serial); "" for JWTs

    def __post_init__(self) -> None:
        if not isinstance(self.kind, RevocationKind):
            raise InvalidArgumentError("kind", f"must be a RevocationKind, got {self.kind!r}")
        check_str("value", self.value, required=True)
        for name in ("entry_id", "agent_id", "reason", "spiffe_id", "issuer"):
            check_str(name, getattr(self, name))
        check_time("revoked_at", self.revoked_at)
        check_time("expires_at", self.expires_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Issuance:
    """One SVID the server signed (issuance log): what ``revoke entry|agent`` and RevokeOwn look up."""

    kind: RevocationKind
    value: str  # lowercase hex serial or JWT ``jti``
    spiffe_id: str
    expires_at: datetime
    entry_id: str = ""
    agent_id: str = ""
    issuer: str = ""  # hex SKI of the signing X.509 CA; "" for JWTs

    def __post_init__(self) -> None:
        if not isinstance(self.kind, RevocationKind):
            raise InvalidArgumentError("kind", f"must be a RevocationKind, got {self.kind!r}")
        check_str("value", self.value, required=True)
        for name in ("spiffe_id", "entry_id", "agent_id", "issuer"):
            check_str(name, getattr(self, name))
        check_time("expires_at", self.expires_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditCheckpoint:
    """A signed statement that the audit chain's record ``seq`` has hash ``hash`` (signing lives elsewhere)."""

    seq: int
    hash: str
    time: datetime
    signature: str

    def __post_init__(self) -> None:
        check_int("seq", self.seq, low=1, high=2**62)
        check_str("hash", self.hash, required=True)
        check_time("time", self.time)
        check_str("signature", self.signature, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationRequest:
    """One revocation, committed with its side effect and its audit record in a single transaction.

    What is revoked: the ``items`` given, plus every SVID issued under ``entry_id`` or to
    ``agent_id`` that is unexpired at ``now`` (read inside the transaction, however many).
    ``delete_entry``/``evict_agent`` remove that entry/agent in the same transaction.
    ``limit`` refuses (LimitExceededError) when the table would then hold more unexpired rows;
    ``agent_quota`` likewise for the unexpired revocations of SVIDs issued to ``quota_agent``.
    """

    reason: str
    now: datetime
    items: tuple[Issuance, ...] = ()
    entry_id: str | None = None
    agent_id: str | None = None
    delete_entry: bool = False
    evict_agent: bool = False
    limit: int | None = None
    quota_agent: str = ""
    agent_quota: int | None = None

    def __post_init__(self) -> None:
        check_str("reason", self.reason)
        check_time("now", self.now)
        if self.delete_entry and self.entry_id is None:
            raise InvalidArgumentError("delete_entry", "needs entry_id")
        if self.evict_agent and self.agent_id is None:
            raise InvalidArgumentError("evict_agent", "needs agent_id")


@dataclass(frozen=True, slots=True)
class AuditedEntry:
    """An entry write and the audit rows stored in the same transaction."""

    entry: RegistrationEntry
    audit: tuple[AuditRecord, ...]


@dataclass(frozen=True, slots=True)
class RevokeResult:
    """What :meth:`revoke` did: every revocation it covered, those that were new, and the stored audit rows."""

    revoked: tuple[Revocation, ...]
    added: tuple[Revocation, ...]
    audit: tuple[AuditRecord, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One link of the audit hash chain; the store only keeps it (hashing lives elsewhere)."""

    time: datetime
    record: str
    prev_hash: str
    hash: str
    spiffe_id: str = ""
    decision: str = ""
    seq: int = 0

    def __post_init__(self) -> None:
        check_time("time", self.time)
        check_str("record", self.record, required=True, limit=MAX_AUDIT_RECORD_BYTES)
        check_str("prev_hash", self.prev_hash)
        check_str("hash", self.hash, required=True)
        check_str("spiffe_id", self.spiffe_id)
        check_str("decision", self.decision)


class AuditMinuteCount(NamedTuple):
    """How many audit records (or SVIDs, for records that count ``details.items``) of one kind fell in one minute."""

    minute: datetime
    decision: str
    method: str
    forwarded: bool  # an agent's record, appended by the server
    total: int


class MatchMode(enum.Enum):
    """How an entry's selectors are compared with the filter's selectors."""

    EXACT = "exact"  # same set
    SUBSET = "subset"  # entry's set is a subset of the filter's (what a workload with them gets)
    SUPERSET = "superset"  # entry's set contains all of the filter's
    ANY = "any"  # at least one in common


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectorMatch:
    """A selector filter: a non-empty selector set and a match mode."""

    selectors: tuple[Selector, ...]
    mode: MatchMode = MatchMode.EXACT

    def __post_init__(self) -> None:
        _set(self, "selectors", normalize_selectors("by_selectors", self.selectors, required=True))
        if not isinstance(self.mode, MatchMode):
            raise InvalidArgumentError("by_selectors", f"unknown match mode {self.mode!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryFilter:
    """Conditions an entry must all meet to be listed or counted; None means "any"."""

    by_spiffe_id: str | None = None
    by_parent_id: str | None = None
    by_selectors: SelectorMatch | None = None
    by_hint: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    label_keys: tuple[str, ...] = ()  # labels the entry must carry, whatever their value

    def __post_init__(self) -> None:
        for name in ("by_spiffe_id", "by_parent_id", "by_hint"):
            value = getattr(self, name)
            if value is not None:
                check_str(name, value)
        _set(self, "labels", _mapping("labels", self.labels, MAX_LABELS))
        if len(self.label_keys) > MAX_LABELS:
            raise InvalidArgumentError("label_keys", f"at most {MAX_LABELS} allowed, got {len(self.label_keys)}")
        for key in self.label_keys:
            check_str("label_keys", key, required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFilter:
    """Conditions an agent must all meet to be listed or counted; None means "any"."""

    attestation_type: str | None = None
    banned: bool | None = None
    can_reattest: bool | None = None
    expires_before: datetime | None = None

    def __post_init__(self) -> None:
        if self.attestation_type is not None:
            check_str("attestation_type", self.attestation_type)
        check_time("expires_before", self.expires_before)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """Conditions on audit records; None means "any"."""

    since: datetime | None = None
    spiffe_id: str | None = None
    decision: str | None = None

    def __post_init__(self) -> None:
        check_time("since", self.since)
        for name in ("spiffe_id", "decision"):
            value = getattr(self, name)
            if value is not None:
                check_str(name, value)


@dataclass(frozen=True, slots=True)
class Page:
    """Which page to fetch: ``token`` from the previous result ("" for the first) and a size."""

    token: str = ""
    size: int = DEFAULT_PAGE_SIZE

    def __post_init__(self) -> None:
        check_str("page_token", self.token)
        check_int("page_size", self.size, low=1, high=MAX_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class PageResult(Generic[T]):
    """One page of results; ``next_token`` is "" on the last page."""

    items: tuple[T, ...]
    next_token: str = ""


class ChangeKind(enum.Enum):
    """Which table a change touched."""

    ENTRY = "entry"
    AGENT = "agent"
    BUNDLE = "bundle"
    REVOCATION = "revocation"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change: ``key`` is the entry ID, agent SPIFFE ID or trust domain."""

    seq: int
    kind: ChangeKind
    key: str
    deleted: bool


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Changes after a sequence number; ``history_truncated`` means some were pruned: reload all."""

    changes: tuple[Change, ...]
    history_truncated: bool = False


@dataclass(frozen=True, slots=True)
class LabelGrant:
    """A label set on an entry until ``expires_at``, when the server removes it again."""

    entry_id: str
    key: str
    value: str
    expires_at: datetime
    granted_by: str

    def __post_init__(self) -> None:
        for name in ("entry_id", "key", "granted_by"):
            check_str(name, getattr(self, name), required=True)
        check_str("value", self.value)
        check_time("expires_at", self.expires_at)


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """An operator's decision on the denials of one entry by one approval rule, up to audit seq ``through_seq``."""

    entry_id: str
    rule: str
    decision: str  # "approved" | "rejected"
    operator: str
    decided_at: datetime
    through_seq: int

    def __post_init__(self) -> None:
        for name in ("entry_id", "rule", "decision", "operator"):
            check_str(name, getattr(self, name), required=True)
        if self.decision not in ("approved", "rejected"):
            raise InvalidArgumentError("decision", f"must be 'approved' or 'rejected', got {self.decision!r}")
        check_time("decided_at", self.decided_at)
