from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Selector(_message.Message):
    __slots__ = ("type", "value")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    type: str
    value: str
    def __init__(self, type: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("id", "spiffe_id", "parent_id", "selectors", "x509_svid_ttl", "jwt_svid_ttl", "dns_names", "hint", "admin", "downstream", "federates_with", "expires_at", "revision", "created_at", "labels", "bind_to_process", "max_lifetime", "jwt_claims", "quarantined", "x509_svid_ttl_in_force")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class JwtClaimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    JWT_SVID_TTL_FIELD_NUMBER: _ClassVar[int]
    DNS_NAMES_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    FEDERATES_WITH_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    BIND_TO_PROCESS_FIELD_NUMBER: _ClassVar[int]
    MAX_LIFETIME_FIELD_NUMBER: _ClassVar[int]
    JWT_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    X509_SVID_TTL_IN_FORCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    spiffe_id: str
    parent_id: str
    selectors: _containers.RepeatedCompositeFieldContainer[Selector]
    x509_svid_ttl: int
    jwt_svid_ttl: int
    dns_names: _containers.RepeatedScalarFieldContainer[str]
    hint: str
    admin: bool
    downstream: bool
    federates_with: _containers.RepeatedScalarFieldContainer[str]
    expires_at: int
    revision: int
    created_at: int
    labels: _containers.ScalarMap[str, str]
    bind_to_process: bool
    max_lifetime: int
    jwt_claims: _containers.ScalarMap[str, str]
    quarantined: bool
    x509_svid_ttl_in_force: int
    def __init__(self, id: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., selectors: _Optional[_Iterable[_Union[Selector, _Mapping]]] = ..., x509_svid_ttl: _Optional[int] = ..., jwt_svid_ttl: _Optional[int] = ..., dns_names: _Optional[_Iterable[str]] = ..., hint: _Optional[str] = ..., admin: _Optional[bool] = ..., downstream: _Optional[bool] = ..., federates_with: _Optional[_Iterable[str]] = ..., expires_at: _Optional[int] = ..., revision: _Optional[int] = ..., created_at: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., bind_to_process: _Optional[bool] = ..., max_lifetime: _Optional[int] = ..., jwt_claims: _Optional[_Mapping[str, str]] = ..., quarantined: _Optional[bool] = ..., x509_svid_ttl_in_force: _Optional[int] = ...) -> None: ...

class Agent(_message.Message):
    __slots__ = ("spiffe_id", "attestation_type", "serial", "expires_at", "banned", "selectors", "can_reattest", "created_at", "new_serial", "new_expires_at", "last_sync", "syncing")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    BANNED_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEW_SERIAL_FIELD_NUMBER: _ClassVar[int]
    NEW_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SYNC_FIELD_NUMBER: _ClassVar[int]
    SYNCING_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    attestation_type: str
    serial: str
    expires_at: int
    banned: bool
    selectors: _containers.RepeatedCompositeFieldContainer[Selector]
    can_reattest: bool
    created_at: int
    new_serial: str
    new_expires_at: int
    last_sync: int
    syncing: bool
    def __init__(self, spiffe_id: _Optional[str] = ..., attestation_type: _Optional[str] = ..., serial: _Optional[str] = ..., expires_at: _Optional[int] = ..., banned: _Optional[bool] = ..., selectors: _Optional[_Iterable[_Union[Selector, _Mapping]]] = ..., can_reattest: _Optional[bool] = ..., created_at: _Optional[int] = ..., new_serial: _Optional[str] = ..., new_expires_at: _Optional[int] = ..., last_sync: _Optional[int] = ..., syncing: _Optional[bool] = ...) -> None: ...

class Bundle(_message.Message):
    __slots__ = ("trust_domain", "x509_authorities", "jwt_authorities", "sequence_number", "refresh_hint", "tainted_x509_authorities")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    JWT_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REFRESH_HINT_FIELD_NUMBER: _ClassVar[int]
    TAINTED_X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    x509_authorities: _containers.RepeatedScalarFieldContainer[bytes]
    jwt_authorities: _containers.RepeatedCompositeFieldContainer[JwtKey]
    sequence_number: int
    refresh_hint: int
    tainted_x509_authorities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trust_domain: _Optional[str] = ..., x509_authorities: _Optional[_Iterable[bytes]] = ..., jwt_authorities: _Optional[_Iterable[_Union[JwtKey, _Mapping]]] = ..., sequence_number: _Optional[int] = ..., refresh_hint: _Optional[int] = ..., tainted_x509_authorities: _Optional[_Iterable[str]] = ...) -> None: ...

class Revocation(_message.Message):
    __slots__ = ("kind", "value", "spiffe_id", "entry_id", "agent_id", "reason", "revoked_at", "expires_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    kind: str
    value: str
    spiffe_id: str
    entry_id: str
    agent_id: str
    reason: str
    revoked_at: int
    expires_at: int
    def __init__(self, kind: _Optional[str] = ..., value: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., entry_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., reason: _Optional[str] = ..., revoked_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class JwtKey(_message.Message):
    __slots__ = ("key_id", "public_key", "expires_at", "tainted")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    public_key: bytes
    expires_at: int
    tainted: bool
    def __init__(self, key_id: _Optional[str] = ..., public_key: _Optional[bytes] = ..., expires_at: _Optional[int] = ..., tainted: _Optional[bool] = ...) -> None: ...
