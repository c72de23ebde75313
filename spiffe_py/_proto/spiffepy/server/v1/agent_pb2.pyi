from spiffe_py._proto.spiffepy.server.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttestParams(_message.Message):
    __slots__ = ("attestation_type", "payload", "csr")
    ATTESTATION_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    attestation_type: str
    payload: bytes
    csr: bytes
    def __init__(self, attestation_type: _Optional[str] = ..., payload: _Optional[bytes] = ..., csr: _Optional[bytes] = ...) -> None: ...

class AttestAgentRequest(_message.Message):
    __slots__ = ("params", "challenge_response")
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    params: AttestParams
    challenge_response: bytes
    def __init__(self, params: _Optional[_Union[AttestParams, _Mapping]] = ..., challenge_response: _Optional[bytes] = ...) -> None: ...

class AttestResult(_message.Message):
    __slots__ = ("spiffe_id", "svid_chain", "can_reattest", "bundle")
    SPIFFE_ID_FIELD_NUMBER: _ClassVar[int]
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    CAN_REATTEST_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    spiffe_id: str
    svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    can_reattest: bool
    bundle: _types_pb2.Bundle
    def __init__(self, spiffe_id: _Optional[str] = ..., svid_chain: _Optional[_Iterable[bytes]] = ..., can_reattest: _Optional[bool] = ..., bundle: _Optional[_Union[_types_pb2.Bundle, _Mapping]] = ...) -> None: ...

class AttestAgentResponse(_message.Message):
    __slots__ = ("challenge", "result")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    result: AttestResult
    def __init__(self, challenge: _Optional[bytes] = ..., result: _Optional[_Union[AttestResult, _Mapping]] = ...) -> None: ...

class RenewAgentRequest(_message.Message):
    __slots__ = ("csr",)
    CSR_FIELD_NUMBER: _ClassVar[int]
    csr: bytes
    def __init__(self, csr: _Optional[bytes] = ...) -> None: ...

class RenewAgentResponse(_message.Message):
    __slots__ = ("svid_chain",)
    SVID_CHAIN_FIELD_NUMBER: _ClassVar[int]
    svid_chain: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, svid_chain: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SyncAuthorizedRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SyncAuthorizedResponse(_message.Message):
    __slots__ = ("full", "entries", "removed_entry_ids", "bundle", "federated_bundles", "revocations", "crls", "federated_bundles_set", "full_messages")
    FULL_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REMOVED_ENTRY_IDS_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_BUNDLES_FIELD_NUMBER: _ClassVar[int]
    REVOCATIONS_FIELD_NUMBER: _ClassVar[int]
    CRLS_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_BUNDLES_SET_FIELD_NUMBER: _ClassVar[int]
    FULL_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    full: bool
    entries: _containers.RepeatedCompositeFieldContainer[_types_pb2.Entry]
    removed_entry_ids: _containers.RepeatedScalarFieldContainer[str]
    bundle: _types_pb2.Bundle
    federated_bundles: _containers.RepeatedCompositeFieldContainer[_types_pb2.Bundle]
    revocations: _containers.RepeatedCompositeFieldContainer[_types_pb2.Revocation]
    crls: CrlSet
    federated_bundles_set: bool
    full_messages: int
    def __init__(self, full: _Optional[bool] = ..., entries: _Optional[_Iterable[_Union[_types_pb2.Entry, _Mapping]]] = ..., removed_entry_ids: _Optional[_Iterable[str]] = ..., bundle: _Optional[_Union[_types_pb2.Bundle, _Mapping]] = ..., federated_bundles: _Optional[_Iterable[_Union[_types_pb2.Bundle, _Mapping]]] = ..., revocations: _Optional[_Iterable[_Union[_types_pb2.Revocation, _Mapping]]] = ..., crls: _Optional[_Union[CrlSet, _Mapping]] = ..., federated_bundles_set: _Optional[bool] = ..., full_messages: _Optional[int] = ...) -> None: ...

class CrlSet(_message.Message):
    __slots__ = ("crls",)
    CRLS_FIELD_NUMBER: _ClassVar[int]
    crls: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, crls: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RevokeOwnRequest(_message.Message):
    __slots__ = ("x509_serials", "jwt_ids", "reason")
    X509_SERIALS_FIELD_NUMBER: _ClassVar[int]
    JWT_IDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    x509_serials: _containers.RepeatedScalarFieldContainer[str]
    jwt_ids: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, x509_serials: _Optional[_Iterable[str]] = ..., jwt_ids: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeOwnResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class ForwardAuditRequest(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, records: _Optional[_Iterable[str]] = ...) -> None: ...

class ForwardAuditResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...

class QuarantineOwnRequest(_message.Message):
    __slots__ = ("entry_id", "reason")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    reason: str
    def __init__(self, entry_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class QuarantineOwnResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class NewX509SVIDParams(_message.Message):
    __slots__ = ("entry_id", "csr")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    CSR_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    csr: bytes
    def __init__(self, entry_id: _Optional[str] = ..., csr: _Optional[bytes] = ...) -> None: ...

class BatchNewX509SVIDRequest(_message.Message):
    __slots__ = ("params",)
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    params: _containers.RepeatedCompositeFieldContainer[NewX509SVIDParams]
    def __init__(self, params: _Optional[_Iterable[_Union[NewX509SVIDParams, _Mapping]]] = ...) -> None: ...

class X509SVIDResult(_message.Message):
    __slots__ = ("entry_id", "status_code", "status_message", "cert_chain")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CERT_CHAIN_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    status_code: int
    status_message: str
    cert_chain: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, entry_id: _Optional[str] = ..., status_code: _Optional[int] = ..., status_message: _Optional[str] = ..., cert_chain: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BatchNewX509SVIDResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[X509SVIDResult]
    def __init__(self, results: _Optional[_Iterable[_Union[X509SVIDResult, _Mapping]]] = ...) -> None: ...

class NewJWTSVIDRequest(_message.Message):
    __slots__ = ("entry_id", "audience", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    audience: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.ScalarMap[str, str]
    def __init__(self, entry_id: _Optional[str] = ..., audience: _Optional[_Iterable[str]] = ..., context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class NewJWTSVIDResponse(_message.Message):
    __slots__ = ("token", "expires_at", "issued_at", "jti")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    JTI_FIELD_NUMBER: _ClassVar[int]
    token: str
    expires_at: int
    issued_at: int
    jti: str
    def __init__(self, token: _Optional[str] = ..., expires_at: _Optional[int] = ..., issued_at: _Optional[int] = ..., jti: _Optional[str] = ...) -> None: ...
