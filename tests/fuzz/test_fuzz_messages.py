"""Request messages of the three gRPC surfaces: decoded by the codec, then validated as the handlers do.

For every ``*Request`` of the Workload API, the agent API (agent -> server) and the admin API, bytes
are decoded with the server's codec and the decoded message is run through the same validation and
conversion the handler applies before touching state (tests/fuzz/_targets.py). The property: the
codec raises only ``DecodeError``/``GRPCError``, and validation only a ``SpiffeError`` that neither
status table (server, Workload API) maps to INTERNAL.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from hypothesis import example, given
from hypothesis import strategies as st

from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, types_pb2
from spiffe_py.errors import SpiffeError
from tests.fuzz._fuzz import CHEAP, MEDIUM, assert_outcome, attempt, mutate
from tests.fuzz._proto import st_messages
from tests.fuzz._targets import CA_CERT, ODD_CERTS, ODD_KEYS, SERVICES, decode_then_validate, valid


@st.composite
def wire_requests(draw: st.DrawFn, classes: list[Any]) -> tuple[Any, bytes]:
    """(request class, bytes): a generated message's encoding, edited, or arbitrary bytes."""
    cls = draw(st.sampled_from(classes))
    kind = draw(st.integers(0, 3))
    if kind == 3:
        return cls, draw(st.binary(max_size=120))
    data = draw(st_messages(cls)).SerializeToString()
    return cls, data if kind == 0 else mutate(data, draw)


@CHEAP
@given(wire_requests(SERVICES["workload"]))
def test_workload_api_requests_decode_and_validate_with_documented_errors_only(case: tuple[Any, bytes]) -> None:
    decode_then_validate(*case)


@CHEAP
@given(wire_requests(SERVICES["agent"]))
def test_agent_api_requests_decode_and_validate_with_documented_errors_only(case: tuple[Any, bytes]) -> None:
    decode_then_validate(*case)


@CHEAP
@given(wire_requests(SERVICES["admin"]))
def test_admin_api_requests_decode_and_validate_with_documented_errors_only(case: tuple[Any, bytes]) -> None:
    decode_then_validate(*case)


def _mostly(valid: st.SearchStrategy[Any], fuzz: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a valid value, so the checks after this field run; sometimes a fuzzed one."""
    return st.one_of(valid, valid, valid, fuzz)


_INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 60, 2**31, 2**53, 999999999999999]))
_INT32 = st.integers(-(2**31), 2**31 - 1)
_entries = st.builds(
    types_pb2.Entry,
    spiffe_id=_mostly(st.sampled_from(["spiffe://example.org/web", "spiffe://example.org/a/b"]), st.text(max_size=30)),
    parent_id=_mostly(st.just("spiffe://example.org/spire/agent/join_token/x"), st.text(max_size=30)),
    selectors=_mostly(st.just([types_pb2.Selector(type="unix", value="uid:0")]),
                      st.lists(st.builds(types_pb2.Selector, type=st.text(max_size=8), value=st.text(max_size=8)),
                               max_size=2)),
    x509_svid_ttl=_mostly(st.integers(0, 86400), _INT32), jwt_svid_ttl=_mostly(st.integers(0, 86400), _INT32),
    max_lifetime=_mostly(st.just(0), _INT32),
    expires_at=_mostly(st.just(0), _INT64),
    dns_names=st.lists(st.text(max_size=20), max_size=2),
    hint=st.text(max_size=20),
    federates_with=_mostly(st.just([]), st.lists(st.text(max_size=12), max_size=2)),
    labels=st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
    jwt_claims=_mostly(st.just({}), st.dictionaries(st.sampled_from(["sub", "aud", "team", ""]), st.text(max_size=8),
                                                    max_size=2)),
)


_bundles = st.builds(
    types_pb2.Bundle,
    trust_domain=_mostly(st.just("other.org"), st.text(max_size=12)),
    x509_authorities=st.lists(st.one_of(st.just(CA_CERT.public_bytes(serialization.Encoding.DER)),
                                        st.sampled_from(ODD_CERTS), st.binary(max_size=40)), max_size=2),
    jwt_authorities=st.lists(st.builds(types_pb2.JwtKey, key_id=st.text(max_size=6),
                                       public_key=st.sampled_from(ODD_KEYS) | st.binary(max_size=40)), max_size=2),
    sequence_number=_INT64,
    refresh_hint=_INT32,
)


@MEDIUM
@given(st.one_of(_entries.map(lambda e: admin_pb2.CreateEntryRequest(entry=e)),
                 _bundles.map(lambda b: admin_pb2.SetFederatedBundleRequest(bundle=b))))
# An Ed25519 CA certificate parsed, then failed with TypeError when the bundle was serialised to be stored.
@example(admin_pb2.SetFederatedBundleRequest(bundle=types_pb2.Bundle(trust_domain="other.org",
                                                                     x509_authorities=[ODD_CERTS[0]])))
def test_mostly_valid_entries_and_bundles_validate_with_documented_errors_only(req: Any) -> None:
    assert_outcome(attempt(valid, req), type(req), SpiffeError)
