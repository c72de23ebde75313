"""Validation the handlers apply to each decoded request, shared by the hypothesis tests and atheris.

``check(data)`` is one fuzz iteration: the first byte picks a ``*Request`` class of the three
services, the rest is decoded by the server's codec and validated like the handler does. It raises
AssertionError on anything but a documented error (or a SpiffeError that maps to INTERNAL).
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
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from spiffe_agent.workloadapi.convert import audience_list
from spiffe_agent.workloadapi.jwt import JwtSvidValidator
from spiffe_agent.workloadapi.status import status_for as workload_status_for
from spiffe_py._proto import workload_pb2
from spiffe_py._proto.spiffepy.server.v1 import admin_pb2, agent_pb2
from spiffe_py.clock import ManualClock
from spiffe_py.errors import SpiffeError
from spiffe_py.spiffeid import SpiffeId, TrustDomain
from spiffe_server.api.admin_service import check_audience
from spiffe_server.api.convert import (
    bundle_from_proto,
    bundle_to_proto,
    check_ttl,
    entry_from_proto,
    parse_member_id,
    parse_selectors,
    parse_workload_id,
)
from spiffe_server.api.errors import status_for as server_status_for
from spiffe_server.ca.signer import parse_csr, public_key_from_csr
from spiffe_server.federation.relationship import parse_bootstrap_bundle, parse_relationship
from spiffe_server.nodeattest.join_token import JoinTokenAttestor, MemoryJoinTokenStore
from spiffe_server.nodeattest.x509pop import X509PopAttestor
from spiffe_server.revocation import check_jti, check_reason, parse_serial
from tests.fuzz._fuzz import NOW, assert_outcome, attempt
from tests.fuzz._proto import request_classes
from tests.support.ca import CA

TD = TrustDomain.parse("example.org")
SID = SpiffeId.parse("spiffe://example.org/web")
_CA = CA.create("example.org", now=NOW)
_CODEC = ProtoCodec()  # what every server and the agent decode with (size limits act before it)
_VALIDATOR = JwtSvidValidator(ManualClock(NOW))
_X509POP = X509PopAttestor(TD, [_CA.cert])
CA_CERT = _CA.cert


def _odd_cert(key: Any) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(7).not_valid_before(NOW).not_valid_after(NOW + timedelta(days=1)))
    hash_alg = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, hash_alg).public_bytes(serialization.Encoding.DER)


# Certificates and public keys that parse but that no JWKS or JWT authority can carry.
_ODD_PRIVATE = [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256K1())]
ODD_CERTS = [_odd_cert(k) for k in _ODD_PRIVATE]
ODD_KEYS = [k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
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
        "spiffepy.server.v1.FederationRelationshipRequest": lambda r: (
            parse_relationship(r.relationship.trust_domain, r.relationship.bundle_endpoint_url,
                               r.relationship.bundle_endpoint_profile, r.relationship.endpoint_spiffe_id, own=TD),
            r.trust_domain_bundle and parse_bootstrap_bundle(TrustDomain.parse(r.relationship.trust_domain),
                                                             r.trust_domain_bundle)),
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


def valid(req: Any) -> object:
    """``validate(req)``; a SpiffeError must map to a precise status, never INTERNAL."""
    try:
        validate(req)
    except SpiffeError as err:
        workload = type(req).DESCRIPTOR.file.name.endswith("workload.proto")  # the agent's API, else the server's
        status = workload_status_for(err) if workload else server_status_for(err)
        assert status is not Status.INTERNAL, f"{type(err).__name__} maps to INTERNAL: {err}"
        raise
    return req


_WORKLOAD = request_classes(workload_pb2)
_AGENT = request_classes(agent_pb2)
_ADMIN = request_classes(admin_pb2)


SERVICES: dict[str, list[Any]] = {"workload": _WORKLOAD, "agent": _AGENT, "admin": _ADMIN}


def decode_then_validate(cls: Any, data: bytes) -> None:
    """Decode ``data`` as ``cls`` with the server codec, then validate it; AssertionError on a finding."""
    decoded = attempt(_CODEC.decode, data, cls)
    assert_outcome(decoded, cls, (DecodeError, GRPCError))
    if isinstance(decoded, cls):
        assert_outcome(attempt(valid, decoded), cls, SpiffeError)


ALL_CLASSES: list[Any] = [cls for classes in SERVICES.values() for cls in classes]


def check(data: bytes) -> None:
    """One fuzz input: ``data[0]`` picks the request class (of all three services), ``data[1:]`` is the message."""
    if not data:
        return
    decode_then_validate(ALL_CLASSES[data[0] % len(ALL_CLASSES)], data[1:])


def corpus_entry(message: Any) -> bytes:
    """The corpus file content for ``message`` (its class index byte, then its encoding)."""
    return bytes([ALL_CLASSES.index(type(message))]) + message.SerializeToString()
