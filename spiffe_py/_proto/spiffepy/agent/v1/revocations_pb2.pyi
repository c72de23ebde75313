from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class WatchRevocationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RevocationSet(_message.Message):
    __slots__ = ("full", "x509_serials", "jwt_ids", "tainted_x509_authorities", "tainted_jwt_keys", "more")
    FULL_FIELD_NUMBER: _ClassVar[int]
    X509_SERIALS_FIELD_NUMBER: _ClassVar[int]
    JWT_IDS_FIELD_NUMBER: _ClassVar[int]
    TAINTED_X509_AUTHORITIES_FIELD_NUMBER: _ClassVar[int]
    TAINTED_JWT_KEYS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    full: bool
    x509_serials: _containers.RepeatedScalarFieldContainer[str]
    jwt_ids: _containers.RepeatedScalarFieldContainer[str]
    tainted_x509_authorities: _containers.RepeatedScalarFieldContainer[str]
    tainted_jwt_keys: _containers.RepeatedScalarFieldContainer[str]
    more: bool
    def __init__(self, full: _Optional[bool] = ..., x509_serials: _Optional[_Iterable[str]] = ..., jwt_ids: _Optional[_Iterable[str]] = ..., tainted_x509_authorities: _Optional[_Iterable[str]] = ..., tainted_jwt_keys: _Optional[_Iterable[str]] = ..., more: _Optional[bool] = ...) -> None: ...
