"""Inputs the fuzzers found that raised an undocumented error (INTERNAL), kept as regression tests."""

from __future__ import annotations

from spiffe_py._proto.spiffepy.server.v1 import types_pb2
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import TrustDomain
from spiffe_server.api.convert import entry_from_proto
from spiffe_server.audit import ForwardError
from tests.fuzz._fuzz import NOW, assert_outcome, attempt

TD = TrustDomain.parse("example.org")


def test_entry_expiring_after_year_9999_is_a_request_error() -> None:
    entry = types_pb2.Entry(spiffe_id="spiffe://example.org/web", parent_id="spiffe://example.org/spire/agent/x",
                            selectors=[types_pb2.Selector(type="unix", value="uid:0")], expires_at=999999999999999)
    assert_outcome(attempt(entry_from_proto, entry, trust_domain=TD, now=NOW), object, SpiffeError)


def test_forwarded_audit_record_nested_deeply_is_a_forward_error() -> None:
    from spiffe_server.audit import _parse_forwarded  # the parser ForwardAudit runs on an agent's records

    assert_outcome(attempt(_parse_forwarded, ["[" * 5000]), list, ForwardError)
