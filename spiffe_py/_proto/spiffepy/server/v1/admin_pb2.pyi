from spiffe_py._proto.spiffepy.server.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateEntryRequest(_message.Message):
    __slots__ = ("entry", "allow_unknown_selectors")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNKNOWN_SELECTORS_FIELD_NUMBER: _ClassVar[int]
    entry: _types_pb2.Entry
    allow_unknown_selectors: bool
    def __init__(self, entry: _Optional[_Union[_types_pb2.Entry, _Mapping]] = ..., allow_unknown_selectors: _Optional[bool] = ...) -> None: ...

class UpdateEntryRequest(_message.Message):
    __slots__ = ("entry", "allow_unknown_selectors")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNKNOWN_SELECTORS_FIELD_NUMBER: _ClassVar[int]
    entry: _types_pb2.Entry
    allow_unknown_selectors: bool
    def __init__(self, entry: _Optional[_Union[_types_pb2.Entry, _Mapping]] = ..., allow_unknown_selectors: _Optional[bool] = ...) -> None: ...

class DeleteEntryRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteEntryResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEntryRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListEntriesRequest(_message.Message):
    __slots__ = ("spiffe_id", "parent_id", "selectors", "page_size", "page_token", "labels", "match_selectors")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MATCH_SELECTORS_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    parent_id: str
    selectors: _containers.RepeatedCompositeFieldContainer[_types_pb2.Selector]
    page_size: int
    page_token: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    match_selectors: str
    def __init__(self, spiffe_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., selectors: _Optional[_Iterable[_Union[_types_pb2.Selector, _Mapping]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., match_selectors: _Optional[str] = ...) -> None: ...

class ListEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.Entry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[_types_pb2.Entry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BatchCreateEntryRequest(_message.Message):
    __slots__ = ("entries", "allow_unknown_selectors")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNKNOWN_SELECTORS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.Entry]
    allow_unknown_selectors: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[_types_pb2.Entry, _Mapping]]] = ..., allow_unknown_selectors: _Optional[bool] = ...) -> None: ...

class BatchUpdateEntryRequest(_message.Message):
    __slots__ = ("entries", "allow_unknown_selectors")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNKNOWN_SELECTORS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.Entry]
    allow_unknown_selectors: bool
    def __init__(self, entries: _Optional[_Iterable[_Union[_types_pb2.Entry, _Mapping]]] = ..., allow_unknown_selectors: _Optional[bool] = ...) -> None: ...

class BatchDeleteEntryRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ItemStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class EntryResult(_message.Message):
    __slots__ = ("status", "entry")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    status: ItemStatus
    entry: _types_pb2.Entry
    def __init__(self, status: _Optional[_Union[ItemStatus, _Mapping]] = ..., entry: _Optional[_Union[_types_pb2.Entry, _Mapping]] = ...) -> None: ...

class BatchEntryResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EntryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EntryResult, _Mapping]]] = ...) -> None: ...

class DeleteEntryResult(_message.Message):
    __slots__ = ("status", "id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    status: ItemStatus
    id: str
    def __init__(self, status: _Optional[_Union[ItemStatus, _Mapping]] = ..., id: _Optional[str] = ...) -> None: ...

class BatchDeleteEntryResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeleteEntryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DeleteEntryResult, _Mapping]]] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class CreateJoinTokenRequest(_message.Message):
    __slots__ = ("ttl", "spiffe_id")
    TTL_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    ttl: int
    spiffe_id: str
    def __init__(self, ttl: _Optional[int] = ..., spiffe_id: _Optional[str] = ...) -> None: ...

class JoinToken(_message.Message):
    __slots__ = ("value", "expires_at", "agent_id")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    value: str
    expires_at: int
    agent_id: str
    def __init__(self, value: _Optional[str] = ..., expires_at: _Optional[int] = ..., agent_id: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents", "next_page_token")
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_types_pb2.Agent]
    next_page_token: str
    def __init__(self, agents: _Optional[_Iterable[_Union[_types_pb2.Agent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AgentRequest(_message.Message):
    __slots__ = ("spiffe_id",)
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    def __init__(self, spiffe_id: _Optional[str] = ...) -> None: ...

class AgentActionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetBundleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFederatedBundlesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFederatedBundlesResponse(_message.Message):
    __slots__ = ("bundles",)
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    bundles: _containers.RepeatedCompositeFieldContainer[_types_pb2.Bundle]
    def __init__(self, bundles: _Optional[_Iterable[_Union[_types_pb2.Bundle, _Mapping]]] = ...) -> None: ...

class SetFederatedBundleRequest(_message.Message):
    __slots__ = ("bundle",)
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    bundle: _types_pb2.Bundle
    def __init__(self, bundle: _Optional[_Union[_types_pb2.Bundle, _Mapping]] = ...) -> None: ...

class DeleteFederatedBundleRequest(_message.Message):
    __slots__ = ("trust_domain",)
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    def __init__(self, trust_domain: _Optional[str] = ...) -> None: ...

class DeleteFederatedBundleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MintX509SVIDRequest(_message.Message):
    __slots__ = ("csr", "ttl")
    CSR_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    ttl: int
    def __init__(self, csr: _Optional[bytes] = ..., ttl: _Optional[int] = ...) -> None: ...

class MintX509SVIDResponse(_message.Message):
    __slots__ = ("svid_chain", "bundle")
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    bundle: _types_pb2.Bundle
    def __init__(self, svid_chain: _Optional[_Iterable[bytes]] = ..., bundle: _Optional[_Union[_types_pb2.Bundle, _Mapping]] = ...) -> None: ...

class MintJWTSVIDRequest(_message.Message):
    __slots__ = ("spiffe_id", "audience", "ttl")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    ttl: int
    def __init__(self, spiffe_id: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ..., ttl: _Optional[int] = ...) -> None: ...

class MintJWTSVIDResponse(_message.Message):
    __slots__ = ("token", "expires_at")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: int
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("live", "ready", "checks")
    class ChecksEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LIVE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    live: bool
    ready: bool
    checks: _containers.ScalarMap[str, str]
    def __init__(self, live: _Optional[bool] = ..., ready: _Optional[bool] = ..., checks: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RevokeSvidRequest(_message.Message):
    __slots__ = ("x509_serial", "jwt_id", "reason")
    X509_SERIAL_FIELD_NUMBER: _ClassVar[int]
    JWT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    x509_serial: str
    jwt_id: str
    reason: str
    def __init__(self, x509_serial: _Optional[str] = ..., jwt_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeEntryRequest(_message.Message):
    __slots__ = ("id", "reason", "delete")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    delete: bool
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ..., delete: _Optional[bool] = ...) -> None: ...

class RevokeAgentRequest(_message.Message):
    __slots__ = ("spiffe_id", "reason")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    reason: str
    def __init__(self, spiffe_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("revocations",)
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    revocations: _containers.RepeatedCompositeFieldContainer[_types_pb2.Revocation]
    def __init__(self, revocations: _Optional[_Iterable[_Union[_types_pb2.Revocation, _Mapping]]] = ...) -> None: ...

class ListRevocationsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRevocationsResponse(_message.Message):
    __slots__ = ("revocations", "next_page_token")
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    revocations: _containers.RepeatedCompositeFieldContainer[_types_pb2.Revocation]
    next_page_token: str
    def __init__(self, revocations: _Optional[_Iterable[_Union[_types_pb2.Revocation, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class LocalAuthorityRequest(_message.Message):
    __slots__ = ("kind", "authority_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    authority_id: str
    def __init__(self, kind: _Optional[str] = ..., authority_id: _Optional[str] = ...) -> None: ...

class LocalAuthority(_message.Message):
    __slots__ = ("authority_id", "status", "not_before", "not_after", "tainted")
    AUTHORITY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NOT_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_FIELD_NUMBER: _ClassVar[int]
    TAINTED_FIELD_NUMBER: _ClassVar[int]
    authority_id: str
    status: str
    not_before: int
    not_after: int
    tainted: bool
    def __init__(self, authority_id: _Optional[str] = ..., status: _Optional[str] = ..., not_before: _Optional[int] = ..., not_after: _Optional[int] = ..., tainted: _Optional[bool] = ...) -> None: ...

class LocalAuthorityResponse(_message.Message):
    __slots__ = ("authorities",)
    AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    authorities: _containers.RepeatedCompositeFieldContainer[LocalAuthority]
    def __init__(self, authorities: _Optional[_Iterable[_Union[LocalAuthority, _Mapping]]] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("since", "spiffe_id", "decision", "page_size", "page_token")
    SINCE_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    since: int
    spiffe_id: str
    decision: str
    page_size: int
    page_token: str
    def __init__(self, since: _Optional[int] = ..., spiffe_id: _Optional[str] = ..., decision: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("records", "next_page_token")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedScalarFieldContainer[str]
    next_page_token: str
    def __init__(self, records: _Optional[_Iterable[str]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyAuditResponse(_message.Message):
    __slots__ = ("ok", "count", "seq", "kind", "reason")
    OK_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    count: int
    seq: int
    kind: str
    reason: str
    def __init__(self, ok: _Optional[bool] = ..., count: _Optional[int] = ..., seq: _Optional[int] = ..., kind: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PatchEntryRequest(_message.Message):
    __slots__ = ("id", "set_labels", "remove_labels", "clear_quarantine")
    class SetLabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SET_LABELS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_LABELS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_QUARANTINE_FIELD_NUMBER: _ClassVar[int]
    id: str
    set_labels: _containers.ScalarMap[str, str]
    remove_labels: _containers.RepeatedScalarFieldContainer[str]
    clear_quarantine: bool
    def __init__(self, id: _Optional[str] = ..., set_labels: _Optional[_Mapping[str, str]] = ..., remove_labels: _Optional[_Iterable[str]] = ..., clear_quarantine: _Optional[bool] = ...) -> None: ...

class QuarantineEntryRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class CountEntriesRequest(_message.Message):
    __slots__ = ("spiffe_id", "parent_id", "selectors", "match_selectors", "hint")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    MATCH_SELECTORS_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    parent_id: str
    selectors: _containers.RepeatedCompositeFieldContainer[_types_pb2.Selector]
    match_selectors: str
    hint: str
    def __init__(self, spiffe_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., selectors: _Optional[_Iterable[_Union[_types_pb2.Selector, _Mapping]]] = ..., match_selectors: _Optional[str] = ..., hint: _Optional[str] = ...) -> None: ...

class PurgeAgentsRequest(_message.Message):
    __slots__ = ("expired_for", "dry_run")
    EXPIRED_FOR_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    expired_for: int
    dry_run: bool
    def __init__(self, expired_for: _Optional[int] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PurgeAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[_types_pb2.Agent]
    def __init__(self, agents: _Optional[_Iterable[_Union[_types_pb2.Agent, _Mapping]]] = ...) -> None: ...

class GetLoggerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetLogLevelRequest(_message.Message):
    __slots__ = ("level",)
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    level: str
    def __init__(self, level: _Optional[str] = ...) -> None: ...

class ResetLogLevelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Logger(_message.Message):
    __slots__ = ("current_level", "launch_level")
    CURRENT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    LAUNCH_LEVEL_FIELD_NUMBER: _ClassVar[int]
    current_level: str
    launch_level: str
    def __init__(self, current_level: _Optional[str] = ..., launch_level: _Optional[str] = ...) -> None: ...

class ListPendingApprovalsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PendingApproval(_message.Message):
    __slots__ = ("entry_id", "spiffe_id", "rule", "reason", "audiences", "method", "last_denied_at", "count", "label", "value", "reporter", "through_seq")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    AUDIENCES_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LAST_DENIED_AT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REPORTER_FIELD_NUMBER: _ClassVar[int]
    THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    spiffe_id: str
    rule: str
    reason: str
    audiences: _containers.RepeatedScalarFieldContainer[str]
    method: str
    last_denied_at: int
    count: int
    label: str
    value: str
    reporter: str
    through_seq: int
    def __init__(self, entry_id: _Optional[str] = ..., spiffe_id: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., audiences: _Optional[_Iterable[str]] = ..., method: _Optional[str] = ..., last_denied_at: _Optional[int] = ..., count: _Optional[int] = ..., label: _Optional[str] = ..., value: _Optional[str] = ..., reporter: _Optional[str] = ..., through_seq: _Optional[int] = ...) -> None: ...

class ListPendingApprovalsResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[PendingApproval]
    def __init__(self, items: _Optional[_Iterable[_Union[PendingApproval, _Mapping]]] = ...) -> None: ...

class ApproveRequestRequest(_message.Message):
    __slots__ = ("entry_id", "rule", "ttl", "through_seq")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    rule: str
    ttl: int
    through_seq: int
    def __init__(self, entry_id: _Optional[str] = ..., rule: _Optional[str] = ..., ttl: _Optional[int] = ..., through_seq: _Optional[int] = ...) -> None: ...

class RejectRequestRequest(_message.Message):
    __slots__ = ("entry_id", "rule", "reason", "through_seq")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    THROUGH_SEQ_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    rule: str
    reason: str
    through_seq: int
    def __init__(self, entry_id: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., through_seq: _Optional[int] = ...) -> None: ...

class RejectRequestResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateConsoleLoginRequest(_message.Message):
    __slots__ = ("user", "readonly")
    USER_FIELD_NUMBER: _ClassVar[int]
    READONLY_FIELD_NUMBER: _ClassVar[int]
    user: str
    readonly: bool
    def __init__(self, user: _Optional[str] = ..., readonly: _Optional[bool] = ...) -> None: ...

class CreateConsoleLoginResponse(_message.Message):
    __slots__ = ("url", "expires_at")
    URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    url: str
    expires_at: int
    def __init__(self, url: _Optional[str] = ..., expires_at: _Optional[int] = ...) -> None: ...

class FederationRelationship(_message.Message):
    __slots__ = ("trust_domain", "bundle_endpoint_url", "bundle_endpoint_profile", "endpoint_spiffe_id", "source", "last_refresh", "last_error", "next_refresh", "bundle_sequence")
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ENDPOINT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LAST_REFRESH_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_REFRESH_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    bundle_endpoint_url: str
    bundle_endpoint_profile: str
    endpoint_spiffe_id: str
    source: str
    last_refresh: int
    last_error: str
    next_refresh: int
    bundle_sequence: int
    def __init__(self, trust_domain: _Optional[str] = ..., bundle_endpoint_url: _Optional[str] = ..., bundle_endpoint_profile: _Optional[str] = ..., endpoint_spiffe_id: _Optional[str] = ..., source: _Optional[str] = ..., last_refresh: _Optional[int] = ..., last_error: _Optional[str] = ..., next_refresh: _Optional[int] = ..., bundle_sequence: _Optional[int] = ...) -> None: ...

class FederationRelationshipRequest(_message.Message):
    __slots__ = ("relationship", "trust_domain_bundle")
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    TRUST_DOMAIN_BUNDLE_FIELD_NUMBER: _ClassVar[int]
    relationship: FederationRelationship
    trust_domain_bundle: bytes
    def __init__(self, relationship: _Optional[_Union[FederationRelationship, _Mapping]] = ..., trust_domain_bundle: _Optional[bytes] = ...) -> None: ...

class FederationRelationshipId(_message.Message):
    __slots__ = ("trust_domain",)
    TRUST_DOMAIN_FIELD_NUMBER: _ClassVar[int]
    trust_domain: str
    def __init__(self, trust_domain: _Optional[str] = ...) -> None: ...

class DeleteFederationRelationshipResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFederationRelationshipsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFederationRelationshipsResponse(_message.Message):
    __slots__ = ("relationships",)
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    relationships: _containers.RepeatedCompositeFieldContainer[FederationRelationship]
    def __init__(self, relationships: _Optional[_Iterable[_Union[FederationRelationship, _Mapping]]] = ...) -> None: ...
