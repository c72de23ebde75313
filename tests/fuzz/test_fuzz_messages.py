"""Request messages of the three gRPC surfaces: decoded by the codec, then validated as the handlers do.

For every ``*Request`` of the Workload API, the agent API (agent -> server) and the admin API, bytes
are decoded with the server's codec and the decoded message is run through the same validation and
conversion the handler applies before touching state. The property: the codec raises only
``DecodeError``/``GRPCError``, and validation only a ``SpiffeError`` (whose ``grpc_status`` the one
error table maps; a status of INTERNAL there is a finding too).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from google.protobuf.message import DecodeError
from grpclib.exceptions import GRPCError
from hypothesis import example, given
from hypothesis import strategies as st

from agent.workloadapi.convert import audience_list
from agent.workloadapi.jwt import JwtSvidValidator
from server.api.admin_service import check_audience
from server.api.codec import BoundedProtoCodec
from server.api.convert import (
    bundle_from_proto,
    bundle_to_proto,
    check_ttl,
    entry_from_proto,
    parse_member_id,
    parse_selectors,
    parse_workload_id,
)
from server.ca.signer import parse_csr, public_key_from_csr
from server.nodeattest.join_token import JoinTokenAttestor, MemoryJoinTokenStore
from server.nodeattest.x509pop import X509PopAttestor
from server.revocation import check_jti, check_reason, parse_serial
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2, types_pb2
from spiffe_py.clock import ManualClock
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from tests.fuzz._fuzz import CHEAP, MEDIUM, NOW, assert_outcome, attempt, mutate
from tests.fuzz._proto import request_classes, st_messages
from tests.support.ca import CA

TD = TrustDomain.parse("example.org")
SID = SpiffeId.parse("spiffe://example.org/web")
_CA = CA.create("example.org", now=NOW)
_CODEC = BoundedProtoCodec()
_VALIDATOR = JwtSvidValidator(ManualClock(NOW))
_X509POP = X509PopAttestor(TD, [_CA.cert])
def _odd_cert(key: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)))
    hash_alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, hash_alg).public_bytes(serialization.Encoding.DER)


# Certificates and public keys that parse but that no JWKS or JWT authority can carry.
_ODD_PRIVATE = [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256K1())]
_ODD_CERTS = [_odd_cert(k) for k in _ODD_PRIVATE]
_ODD_KEYS = [k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
             for k in _ODD_PRIVATE]


def _each(values: Any, check: Any, *args: Any) -> None:
    for value in values:
        check(value, *args)


async def _no_challenge_answer(data: bytes) -> bytes:
    return data[::-1]  # never a valid proof of possession


def _attest(params: agent_pb2.AttestParams) -> None:
    if params.attestation_type == "x509pop":
        asyncio.run(_X509POP.attest(params.payload, _no_challenge_answer, now=NOW))
    else:
        asyncio.run(JoinTokenAttestor(TD, MemoryJoinTokenStore()).attest(params.payload, _no_challenge_answer,
                                                                          now=NOW))
    if params.csr:
        public_key_from_csr(params.csr, spiffe_id=SID)


def validate(req: Any) -> None:
    """What the handler of ``req``'s RPC checks before it reads or writes state."""
    name = req.DESCRIPTOR.full_name
    handlers: dict[str, Any] = {
        # Workload API
        "SPIFFE.JWTSVIDRequest": lambda r: (audience_list(r.audience),
                                             r.spiffe_id and SpiffeId.parse(r.spiffe_id)),
        "SPIFFE.ValidateJWTSVIDRequest": lambda r: r.audience and r.svid and _VALIDATOR.validate(
            r.svid, r.audience, [_CA.spiffe_bundle()]),
        # agent API
        "spiffepy.server.v1.AttestAgentRequest": lambda r: r.HasField("params") and _attest(r.params),
        "spiffepy.server.v1.RenewAgentRequest": lambda r: public_key_from_csr(r.csr, spiffe_id=SID),
        "spiffepy.server.v1.BatchNewX509SVIDRequest": lambda r: [public_key_from_csr(p.csr, spiffe_id=SID)
                                                                 for p in r.params],
        "spiffepy.server.v1.NewJWTSVIDRequest": lambda r: check_audience(r.audience),
        "spiffepy.server.v1.RevokeOwnRequest": lambda r: (_each(r.x509_serials, parse_serial),
                                                          _each(r.jwt_ids, check_jti), check_reason(r.reason)),
        # admin API
        "spiffepy.server.v1.CreateEntryRequest": lambda r: entry_from_proto(r.entry, trust_domain=TD, now=NOW),
        "spiffepy.server.v1.UpdateEntryRequest": lambda r: entry_from_proto(r.entry, trust_domain=TD, now=NOW),
        "spiffepy.server.v1.ListEntriesRequest": lambda r: (
            parse_selectors(r.selectors, "selectors"),
            r.spiffe_id and parse_member_id(r.spiffe_id, "spiffe_id", TD),
            r.parent_id and parse_member_id(r.parent_id, "parent_id", TD)),
        "spiffepy.server.v1.CreateJoinTokenRequest": lambda r: (
            check_ttl(r.ttl, "ttl"), r.spiffe_id and parse_workload_id(r.spiffe_id, "spiffe_id", TD)),
        "spiffepy.server.v1.AgentRequest": lambda r: parse_member_id(r.spiffe_id, "spiffe_id", TD),
        "spiffepy.server.v1.RevokeAgentRequest": lambda r: (parse_member_id(r.spiffe_id, "spiffe_id", TD),
                                                            check_reason(r.reason)),
        "spiffepy.server.v1.SetFederatedBundleRequest": lambda r: bundle_to_proto(
            _stored(bundle_from_proto(r.bundle))),
        "spiffepy.server.v1.DeleteFederatedBundleRequest": lambda r: TrustDomain.parse(r.trust_domain),
        "spiffepy.server.v1.MintX509SVIDRequest": lambda r: (r.csr and parse_csr(r.csr), check_ttl(r.ttl, "ttl")),
        "spiffepy.server.v1.MintJWTSVIDRequest": lambda r: (
            parse_workload_id(r.spiffe_id, "spiffe_id", TD), check_audience(r.audience), check_ttl(r.ttl, "ttl")),
        "spiffepy.server.v1.RevokeSvidRequest": lambda r: (
            parse_serial(r.x509_serial) if r.x509_serial else check_jti(r.jwt_id), check_reason(r.reason)),
        "spiffepy.server.v1.RevokeEntryRequest": lambda r: check_reason(r.reason),
        "spiffepy.server.v1.QuarantineEntryRequest": lambda r: check_reason(r.reason),
    }
    check = handlers.get(name)
    if check is not None:
        check(req)


def _stored(bundle: Any) -> Any:
    bundle.to_json()  # SetFederatedBundle stores the bundle's JSON right after parsing it
    return bundle


def _valid(req: Any) -> object:
    """``validate(req)``; a SpiffeError must map to a precise status, never INTERNAL."""
    try:
        validate(req)
    except SpiffeError as err:
        assert err.grpc_status != "INTERNAL", f"{type(err).__name__} maps to INTERNAL: {err}"
        raise
    return req


_WORKLOAD = request_classes(workload_pb2)
_AGENT = request_classes(agent_pb2)
_ADMIN = request_classes(admin_pb2)


@st.composite
def wire_requests(draw: st.DrawFn, classes: list[Any]) -> tuple[Any, bytes]:
    """(request class, bytes): a generated message's encoding, edited, or arbitrary bytes."""
    cls = draw(st.sampled_from(classes))
    kind = draw(st.integers(0, 3))
    if kind == 3:
        return cls, draw(st.binary(max_size=120))
    data = draw(st_messages(cls)).SerializeToString()
    return cls, data if kind == 0 else mutate(data, draw)


def _decode_then_validate(cls: Any, data: bytes) -> None:
    decoded = attempt(_CODEC.decode, data, cls)
    assert_outcome(decoded, cls, (DecodeError, GRPCError))
    if isinstance(decoded, cls):
        assert_outcome(attempt(_valid, decoded), cls, SpiffeError)


@CHEAP
@given(wire_requests(_WORKLOAD))
def test_workload_api_requests_decode_and_validate_with_documented_errors_only(case: tuple[Any, bytes]) -> None:
    _decode_then_validate(*case)


@CHEAP
@given(wire_requests(_AGENT))
def test_agent_api_requests_decode_and_validate_with_documented_errors_only(case: tuple[Any, bytes]) -> None:
    _decode_then_validate(*case)


@CHEAP
@given(wire_requests(_ADMIN))
def test_admin_api_requests_decode_and_validate_with_documented_errors_only(case: tuple[Any, bytes]) -> None:
    _decode_then_validate(*case)


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
    x509_authorities=st.lists(st.one_of(st.just(_CA.cert.public_bytes(serialization.Encoding.DER)),
                                        st.sampled_from(_ODD_CERTS), st.binary(max_size=40)), max_size=2),
    jwt_authorities=st.lists(st.builds(types_pb2.JwtKey, key_id=st.text(max_size=6),
                                       public_key=st.sampled_from(_ODD_KEYS) | st.binary(max_size=40)), max_size=2),
    sequence_number=_INT64,
    refresh_hint=_INT32,
)


@MEDIUM
@given(st.one_of(_entries.map(lambda e: admin_pb2.CreateEntryRequest(entry=e)),
                 _bundles.map(lambda b: admin_pb2.SetFederatedBundleRequest(bundle=b))))
# An Ed25519 CA certificate parsed, then failed with TypeError when the bundle was serialised to be stored.
@example(admin_pb2.SetFederatedBundleRequest(bundle=types_pb2.Bundle(trust_domain="other.org",
                                                                     x509_authorities=[_ODD_CERTS[0]])))
def test_mostly_valid_entries_and_bundles_validate_with_documented_errors_only(req: Any) -> None:
    assert_outcome(attempt(_valid, req), type(req), SpiffeError)


def test_codec_refuses_oversized_messages_with_resource_exhausted() -> None:
    outcome = attempt(BoundedProtoCodec(max_bytes=8).decode, b"\x0a\x09" + b"x" * 9, admin_pb2.GetEntryRequest)
    assert_outcome(outcome, admin_pb2.GetEntryRequest, GRPCError)
    assert not isinstance(outcome, admin_pb2.GetEntryRequest)
